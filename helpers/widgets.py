"""Interactive controls for the lessons.

Each control is ``ipywidgets.interact`` over a plain function of the slider values.
Invalid values are caught *inside* those functions (they raise ValueError), and
:func:`show_or_explain` turns that error into one readable line in the output area.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np


def show_or_explain(render: Callable, *args, **kwargs):
    """Call ``render``; on ValueError print a one-line explanation instead of a traceback.

    Returns what ``render`` returned, or None after an explained error.
    """
    try:
        result = render(*args, **kwargs)
    except ValueError as error:
        print(f"⚠ {error}")
        return None
    if isinstance(result, plt.Figure):
        plt.show()
    return result


def temperature_control(render: Callable[[float], object], value: float = 1.0):
    """A log-scale temperature slider (0.05 … 20) that calls ``render(temperature)``."""
    slider = widgets.FloatLogSlider(value=value, base=10, min=-1.3, max=1.3, step=0.05,
                                    description="temperature T", continuous_update=False)
    return widgets.interact(lambda temperature: show_or_explain(render, temperature), temperature=slider)


def user_control(render: Callable[[int], object], user_ids: np.ndarray, value: int | None = None):
    """A dropdown of user ids that calls ``render(user_id)``."""
    options = [int(u) for u in user_ids]
    picker = widgets.Dropdown(options=options, value=value if value is not None else options[0],
                              description="user id")
    return widgets.interact(lambda user_id: show_or_explain(render, user_id), user_id=picker)
