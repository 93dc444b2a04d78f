"""Every lesson control calls its render function with the documented keyword names,
and explains a ValueError instead of raising it."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import widgets as w


def recorder(calls):
    def render(**values):
        calls.append(values)
        if values.get("fail"):
            raise ValueError("explained")
    return render


@pytest.mark.parametrize("make, names", [
    (lambda r: w.gd_controls(r), {"learning_rate", "batch_size", "steps"}),
    (lambda r: w.federated_controls(r), {"rounds", "clients_per_round", "local_epochs", "client_lr", "server_lr"}),
    (lambda r: w.transfer_controls(r, [10, 50], 3), {"per_class", "unfrozen_blocks"}),
    (lambda r: w.cold_start_controls(r), {"beta", "mapping", "dim"}),
    (lambda r: w.dp_controls(r), {"noise_multiplier", "clip_norm", "clients_per_round", "rounds"}),
    (lambda r: w.attack_controls(r), {"attacker_share", "attack", "aggregator"}),
    (lambda r: w.fltl_controls(r, [0.1, 100.0], 20, 10, 2), {"alpha", "pretrained", "clients_per_round", "local_epochs"}),
    (lambda r: w.compression_controls(r), {"method", "fraction", "error_feedback"}),
])
def test_controls_pass_named_values(make, names):
    calls = []
    make(recorder(calls)).widget.update()
    assert set(calls[-1]) == names


def test_single_value_controls_and_explanations(capsys):
    seen = []
    w.temperature_control(lambda T: seen.append(T)).widget.update()
    w.user_control(lambda user: seen.append(user), np.array([3, 1])).widget.update()
    assert seen[0] == 1.0 and seen[-1] == 3  # interact calls once on display, again on update
    assert w.explained_interact(recorder([]), fail=True) is not None
    assert "⚠ explained" in capsys.readouterr().out


def test_a_panel_draws_its_figure_once():
    """interact displays what its function returns: the panel must return nothing, or a returned
    figure is drawn a second time below the one plt.show() drew."""
    import matplotlib.pyplot as plt

    panel = w.explained_interact(lambda value: plt.figure(), value=w.widgets.IntSlider(value=1))
    panel.widget.update()
    assert panel.widget.result is None
    plt.close("all")
