"""Interactive controls for the lessons.

Each control is ``ipywidgets.interact`` over a plain function of the slider values,
called with keyword arguments named as the controls (``render(learning_rate=…, …)``).
Invalid values are caught *inside* those functions (they raise ValueError), and
:func:`show_or_explain` turns that error into one readable line in the output area.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np

from helpers import fedcore as fc
from helpers.lessons import MF_FEDAVG, mf_config

LABEL_STYLE = {"description_width": "initial"}  # long control labels are shown whole, not cut off
# lesson 04's panel: its defaults, and the values each setting takes when it alone is changed (the panel offers
# the defaults and each single change; every one is trained to the slider's maximum before the panel appears)
SOFTMAX_PANEL = dict(rounds=30, negatives=100, client_lr=1.0, server_lr=10.0, clients_per_round=50)
SOFTMAX_PANEL_OPTIONS = dict(negatives=(25, 100, 400), client_lr=(0.5, 1.0, 2.0), server_lr=(5.0, 10.0, 20.0),
                             clients_per_round=(25, 50, 100))
SOFTMAX_PANEL_SYMBOLS = dict(negatives="m", client_lr="η_c", server_lr="η_s", clients_per_round="K")
SOFTMAX_PANEL_MAX_ROUNDS = 60
COLD_START_DIMS = (4, 8, 16, 32)  # the embedding sizes lesson 06's panel offers
COLD_START_BETAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # its β values (0 and 1 leave no cold or no warm users)


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


@dataclass
class Panel:
    """One control panel shown in this kernel: its name, the ``ipywidgets.interactive`` behind it
    and its controls by parameter name."""

    name: str
    interactive: widgets.interactive
    controls: dict


PANELS: list[Panel] = []  # every panel shown in this kernel, in order (read by helpers.bench widgets)


def explained_interact(render: Callable, name: str | None = None, **controls):
    """``ipywidgets.interact`` over ``render(**values)``, with ValueErrors explained in one line.

    Each keyword names one of ``render``'s parameters and gives the widget that sets it.
    The panel is recorded in :data:`PANELS` under ``name`` (default: ``render``'s name).
    """
    def panel(**values):
        show_or_explain(render, **values)  # it shows the figure; returning it too would draw it twice

    shown = widgets.interact(panel, **controls)
    PANELS.append(Panel(name or getattr(render, "__name__", "panel"), shown.widget, controls))
    return shown


def lessons_with_panels(folder) -> list[str]:
    """The lesson notebooks (``NN_topic.ipynb``) in ``folder`` that show a control panel — those
    that import this module — by name, sorted (for ``helpers.bench widgets`` and the browser test)."""
    from pathlib import Path

    return sorted(p.name for p in Path(folder).glob("[0-9][0-9]_*.ipynb")
                  if "helpers.widgets" in p.read_text(encoding="utf-8"))


def moved_values(control: widgets.ValueWidget) -> list:
    """The values a person would move ``control`` to, default excluded: one step up (down at
    the top) and both ends for a slider, the other options (at most three) for a menu, the
    other state for a checkbox, one less and one more for a number box (1 and 2 at 1)."""
    value = control.value
    if isinstance(control, widgets.Checkbox):
        return [not value]
    if isinstance(control, widgets.Dropdown):
        options = [option[1] if isinstance(option, tuple) else option for option in control.options]
        return [v for v in options if v != value][:3]
    if isinstance(control, widgets.FloatLogSlider):
        exponent = float(np.log(value) / np.log(control.base))
        step = exponent + control.step if exponent + control.step <= control.max else exponent - control.step
        candidates = [control.base ** step, control.base ** control.min, control.base ** control.max]
    elif isinstance(control, (widgets.IntSlider, widgets.FloatSlider)):
        step = value + control.step if value + control.step <= control.max else value - control.step
        candidates = [step, control.min, control.max]
    elif isinstance(control, (widgets.IntText, widgets.BoundedIntText)):
        candidates = [value - 1, value + 1] if value > 1 else [value + 1, value + 2]
    else:
        raise TypeError(f"no moves defined for a {type(control).__name__}")
    moved = []
    for candidate in candidates:
        if not np.isclose(candidate, value) and not any(np.isclose(candidate, m) for m in moved):
            moved.append(type(value)(round(candidate, 6)) if isinstance(value, float) else type(value)(candidate))
    return moved


BROWSER_ORDER = ((widgets.IntSlider, widgets.FloatSlider, widgets.FloatLogSlider), (widgets.Dropdown,),
                 (widgets.Checkbox,), (widgets.IntText, widgets.BoundedIntText))  # the browser check's order of kinds


def browser_sequence(controls: dict) -> list[tuple[str, object]]:
    """The moves the browser check (``tests/browser_panels.py``) makes on a panel with ``controls``,
    in its order and each kept, as (parameter name, value): every slider one step right (left at its
    top), every menu to its next option (the first after the last), every checkbox toggled, every
    number box one up — sliders first, then menus, checkboxes and number boxes, each in panel order."""
    unknown = [type(c).__name__ for c in controls.values() if not any(isinstance(c, k) for k in BROWSER_ORDER)]
    if unknown:
        raise TypeError(f"the browser check has no move for a {', '.join(unknown)}")
    moves = []
    for kinds in BROWSER_ORDER:
        for name, control in controls.items():
            if not isinstance(control, kinds):
                continue
            if isinstance(control, widgets.Dropdown):
                if len(control.options) < 2:
                    continue  # nothing to move to
                values = [option[1] if isinstance(option, tuple) else option for option in control.options]
                moves.append((name, values[(control.index + 1) % len(values)]))
            elif isinstance(control, widgets.Checkbox):
                moves.append((name, not control.value))
            elif isinstance(control, (widgets.IntText, widgets.BoundedIntText)):
                moves.append((name, int(control.value) + 1))
            elif isinstance(control, widgets.FloatLogSlider):
                exponent = float(np.log(control.value) / np.log(control.base))
                up = exponent + control.step <= control.max + 1e-9
                moves.append((name, float(round(control.base ** (exponent + (control.step if up else -control.step)), 6))))
            else:
                up = control.value + control.step <= control.max
                value = control.value + (control.step if up else -control.step)
                moves.append((name, type(control.value)(round(value, 6))))
    return moves


def time_panels(panels: list[Panel] | None = None) -> list[dict]:
    """Seconds each panel takes to answer a change: its default redrawn, every control moved in
    turn to each of :func:`moved_values` (the others at their defaults), then — what a person
    meets, and what the browser check does — the :func:`browser_sequence` of moves, each from the
    state the previous one left (timed as ``"then name=value"``); finally every control back.

    Returns one dict per panel: ``{"panel", "seconds": {"default", "name=value" or "then name=value": s},
    "median", "max"}`` (seconds of wall time, figure drawing included).
    """
    report = []
    for panel in PANELS if panels is None else panels:
        seconds = {}
        start = time.perf_counter()
        panel.interactive.update()
        seconds["default"] = time.perf_counter() - start
        for name, control in panel.controls.items():
            default = control.value
            for value in moved_values(control):
                start = time.perf_counter()
                control.value = value  # interact redraws the panel on every change
                seconds[f"{name}={value}"] = time.perf_counter() - start
            control.value = default
        defaults = {name: control.value for name, control in panel.controls.items()}
        for name, value in browser_sequence(panel.controls):
            start = time.perf_counter()
            panel.controls[name].value = value
            seconds[f"then {name}={value}"] = time.perf_counter() - start
        for name, value in defaults.items():
            panel.controls[name].value = value
        values = list(seconds.values())
        report.append({"panel": panel.name, "seconds": {k: round(v, 3) for k, v in seconds.items()},
                       "median": round(statistics.median(values), 3), "max": round(max(values), 3)})
    return report


def temperature_control(render: Callable[[float], object], value: float = 1.0):
    """A log-scale temperature slider (0.05 … 20) that calls ``render(temperature)``."""
    slider = widgets.FloatLogSlider(value=value, base=10, min=-1.3, max=1.3, step=0.05,
                                    description="temperature T", continuous_update=False, style=LABEL_STYLE)
    return explained_interact(lambda temperature: render(temperature), name="temperature", temperature=slider)


def user_control(render: Callable[[int], object], user_ids: np.ndarray, value: int | None = None):
    """A dropdown of user ids that calls ``render(user_id)``."""
    options = [int(u) for u in user_ids]
    picker = widgets.Dropdown(options=options, value=value if value is not None else options[0],
                              description="user id", style=LABEL_STYLE)
    return explained_interact(lambda user_id: render(user_id), name="user", user_id=picker)


def gd_controls(render: Callable[[float, int, int], object], learning_rate: float = 1.0,
                batch_size: int = 256, steps: int = 300):
    """Learning rate (log slider 1e-3…1e2), batch size (typed, any integer) and steps → ``render``.

    The batch size is a free text box on purpose: impossible values (0, negative,
    larger than the data) reach ``render``, which must explain them.
    """
    rate = widgets.FloatLogSlider(value=learning_rate, base=10, min=-3, max=2, step=0.1,
                                  description="learning rate η", continuous_update=False,
                                  style=LABEL_STYLE)
    batch = widgets.IntText(value=batch_size, description="batch size")
    count = widgets.IntSlider(value=steps, min=10, max=1000, step=10, description="steps", continuous_update=False)
    return explained_interact(render, name="gradient_descent", learning_rate=rate, batch_size=batch, steps=count)


PANEL_ALGORITHMS = ("FedAvg", "FedSGD")  # what lesson 03's panel offers


def panel_config(algorithm: str, clients_per_round: int, local_epochs: int, client_lr: float,
                 server_lr: float) -> fc.FedConfig:
    """The :class:`helpers.fedcore.FedConfig` behind one position of lesson 03's panel.

    FedAvg: lesson 03's set-up (:func:`helpers.lessons.mf_config`) with K, E, η_c, η_s.
    FedSGD: one full-batch gradient per client and θ ← θ − η Σ (n_k/n) ∇L_k with η = ``server_lr``;
    E and η_c do not exist in FedSGD and are ignored (so moving them changes nothing).
    """
    if algorithm == "FedAvg":
        return mf_config(clients_per_round=clients_per_round, local_epochs=local_epochs, client_lr=client_lr,
                         server_lr=server_lr)
    if algorithm == "FedSGD":
        return fc.FedConfig.fedsgd(clients_per_round, learning_rate=server_lr)
    raise ValueError(f"algorithm must be one of {', '.join(PANEL_ALGORITHMS)}, got {algorithm!r}")


def panel_history(runs: fc.RunCache, rounds: int, algorithm: str, clients_per_round: int, local_epochs: int,
                  client_lr: float, server_lr: float) -> tuple[fc.History, int]:
    """What lesson 03's panel draws: the run of :func:`panel_config`'s setting, from ``runs`` (lesson
    03's :class:`helpers.federated.RunCache`), extended to ``rounds`` rounds.

    Returns (history of rounds 0 … ``rounds``, rounds newly trained: 0 when the panel answers from
    the cache). Too large a rate makes the model diverge: NumPy's overflow warnings are silenced and
    the RMSE becomes inf or NaN, which the panel reports as divergence
    (:func:`helpers.federated.diverged`). Raises ValueError (explained on the panel) for an
    impossible setting, e.g. K = 0.
    """
    run = runs.get(panel_config(algorithm, clients_per_round, local_epochs, client_lr, server_lr))
    new_rounds = max(0, int(rounds) - run.rounds_run)
    with np.errstate(over="ignore", invalid="ignore"):
        return run.first(rounds), new_rounds


def federated_controls(render: Callable[[int, str, int, int, float, float], object]):
    """Rounds, algorithm (FedAvg or FedSGD), clients per round K, local epochs E, client rate η_c
    and server rate η_s → ``render``.

    K is typed freely so that impossible values (0, more clients than exist) reach
    ``render``, which must explain them. Starts at lesson 03's set-up (:data:`helpers.lessons.MF_FEDAVG`);
    E goes to 10 and the rounds to 150, far enough to see many local epochs over-fit.
    """
    preset = MF_FEDAVG
    return explained_interact(
        render, name="federated_rounds",
        rounds=widgets.IntSlider(value=30, min=10, max=150, step=10, description="rounds", continuous_update=False),
        algorithm=widgets.Dropdown(options=list(PANEL_ALGORITHMS), value=PANEL_ALGORITHMS[0], description="algorithm",
                                   style=LABEL_STYLE),
        clients_per_round=widgets.IntText(value=preset["clients_per_round"], description="clients per round K",
                                          style=LABEL_STYLE),
        local_epochs=widgets.IntSlider(value=preset["local_epochs"], min=1, max=10, description="local epochs E",
                                       continuous_update=False, style=LABEL_STYLE),
        client_lr=widgets.FloatLogSlider(value=preset["client_lr"], base=10, min=-3, max=0, step=0.1,
                                         description="client rate η_c", continuous_update=False, style=LABEL_STYLE),
        server_lr=widgets.FloatLogSlider(value=preset["server_lr"], base=10, min=-1, max=2, step=0.1, description="server rate η_s",
                                         continuous_update=False, style=LABEL_STYLE),
    )


def transfer_controls(render: Callable[[int, int], object], budgets: list[int], max_blocks: int):
    """Labels per class (the cached budgets) and unfrozen conv blocks → ``render``."""
    return explained_interact(
        render, name="transfer_blocks",
        per_class=widgets.Dropdown(options=budgets, value=budgets[0], description="labels per class", style=LABEL_STYLE),
        unfrozen_blocks=widgets.IntSlider(value=0, min=0, max=max_blocks, description="unfrozen blocks",
                                          continuous_update=False, style=LABEL_STYLE),
    )


def cold_start_controls(render: Callable[[float, str, int], object]):
    """β (share of overlapping users made cold), mapping type and embedding size → ``render``."""
    return explained_interact(
        render, name="cold_start",
        beta=widgets.FloatSlider(value=0.5, min=COLD_START_BETAS[0], max=COLD_START_BETAS[-1], step=0.1,
                                 description="β (cold share)",
                                 continuous_update=False, style=LABEL_STYLE),
        mapping=widgets.Dropdown(options=[("linear", "map_linear"), ("MLP", "map_mlp")], value="map_linear",
                                 description="mapping", style=LABEL_STYLE),
        dim=widgets.Dropdown(options=list(COLD_START_DIMS), value=16, description="embedding size", style=LABEL_STYLE),
    )


CHOSEN_ON_VALIDATION = "validation"  # lesson 08's mapping-rounds menu: the round each run chose on validation


def fed_cold_start_controls(render: Callable[[float, str, int | str, int, str], object], betas, mappings,
                            rounds, revealed):
    """The measured β values, the mapping kind, the mapping round (:data:`CHOSEN_ON_VALIDATION` — the
    round each run chose on validation — or a kept checkpoint), ratings already on the device and the
    metric → ``render`` (every combination was computed before the panel appears: nothing retrains)."""
    return explained_interact(
        render, name="fed_cold_start",
        beta=widgets.Dropdown(options=[(f"{b:.0%}", b) for b in betas], value=betas[len(betas) // 2],
                              description="β (cold share)", style=LABEL_STYLE),
        mapping=widgets.Dropdown(options=[("linear" if m == "linear" else m.upper(), m) for m in mappings],
                                 value=mappings[0], description="mapping", style=LABEL_STYLE),
        mapping_round=widgets.Dropdown(options=[("chosen on validation", CHOSEN_ON_VALIDATION)]
                                       + [(str(r), r) for r in rounds],
                                       value=CHOSEN_ON_VALIDATION, description="mapping rounds", style=LABEL_STYLE),
        revealed=widgets.Dropdown(options=list(revealed), value=revealed[0],
                                  description="music ratings on the device", style=LABEL_STYLE),
        metric=widgets.Dropdown(options=["RMSE", "MAE", "HR@10", "NDCG@10"], value="RMSE",
                                description="metric", style=LABEL_STYLE),
    )


def dp_controls(render: Callable[[float, float, int, int], object]):
    """Noise multiplier σ, clipping norm C, clients per round and rounds → ``render``."""
    return explained_interact(
        render, name="differential_privacy",
        noise_multiplier=widgets.FloatSlider(value=1.0, min=0.3, max=3.0, step=0.1, description="noise σ",
                                             continuous_update=False, style=LABEL_STYLE),
        clip_norm=widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.1, description="clip norm C",
                                         continuous_update=False, style=LABEL_STYLE),
        clients_per_round=widgets.IntText(value=MF_FEDAVG["clients_per_round"], description="clients per round",
                                          style=LABEL_STYLE),
        rounds=widgets.IntSlider(value=20, min=10, max=60, step=10, description="rounds", continuous_update=False),
    )


def attack_controls(render: Callable[[float, str, str], object]):
    """Attackers' share, attack type and aggregator → ``render``."""
    from helpers.security import AGGREGATOR_LABELS, ATTACK_LABELS

    return explained_interact(
        render, name="attacks",
        attacker_share=widgets.FloatSlider(value=0.1, min=0.0, max=0.5, step=0.05, description="attacker share",
                                           continuous_update=False, style=LABEL_STYLE),
        attack=widgets.Dropdown(options=[(label, code) for code, label in ATTACK_LABELS.items()], value="push",
                                description="attack", style=LABEL_STYLE),
        aggregator=widgets.Dropdown(options=[(label, code) for code, label in AGGREGATOR_LABELS.items()], value="clip",
                                    description="aggregator", style=LABEL_STYLE),
    )


def fltl_controls(render: Callable[[float, int, int], object], alphas: list[float], n_clients: int,
                  clients_per_round: int, local_epochs: int):
    """Dirichlet α (the swept values), clients per round K and local epochs E → ``render``.

    K is typed freely so impossible values (0, more than ``n_clients``) reach ``render``.
    """
    return explained_interact(
        render, name="federated_transfer",
        alpha=widgets.Dropdown(options=list(alphas), value=alphas[0], description="Dirichlet α", style=LABEL_STYLE),
        clients_per_round=widgets.IntText(value=clients_per_round, description=f"clients per round (of {n_clients})",
                                          style=LABEL_STYLE),
        local_epochs=widgets.IntSlider(value=local_epochs, min=1, max=5, description="local epochs E",
                                       continuous_update=False, style=LABEL_STYLE),
    )


def compression_controls(render: Callable[[str, float, bool], object], fraction: float = 0.01):
    """Compression method, share of entries kept (log slider, top-k only) and error feedback → ``render``."""
    return explained_interact(
        render, name="compression",
        method=widgets.Dropdown(options=[("top-k sparsification", "topk"), ("8-bit quantisation", "int8")],
                                value="topk", description="compression", style=LABEL_STYLE),
        fraction=widgets.FloatLogSlider(value=fraction, base=10, min=-4, max=0, step=0.25,
                                        description="share kept (top-k)", continuous_update=False, style=LABEL_STYLE),
        error_feedback=widgets.Checkbox(value=True, description="error feedback", style=LABEL_STYLE),
    )


def softmax_panel_settings() -> dict[str, dict]:
    """The settings lesson 04's panel offers, label → keyword arguments of
    :meth:`helpers.fedsoftmax.Playground.history` without the rounds: the defaults first, then every value
    of :data:`SOFTMAX_PANEL_OPTIONS` changed alone (the rest at the defaults)."""
    defaults = {name: value for name, value in SOFTMAX_PANEL.items() if name != "rounds"}
    said = ", ".join(f"{SOFTMAX_PANEL_SYMBOLS[name]} = {value:g}" for name, value in defaults.items())
    settings = {f"defaults ({said})": defaults}
    for name, options in SOFTMAX_PANEL_OPTIONS.items():
        for option in options:
            if option != defaults[name]:
                settings[f"{SOFTMAX_PANEL_SYMBOLS[name]} = {option:g}, the rest as the defaults"] = {**defaults, name: option}
    return settings


def softmax_controls(render: Callable[[int, str], object]):
    """Lesson 04's panel (sampled softmax): the rounds and one of :func:`softmax_panel_settings` →
    ``render(rounds=…, setting=label)``; only those settings are offered, each trained to the slider's
    maximum before the panel appears (:func:`softmax_warm_settings`), so every move is a lookup."""
    labels = list(softmax_panel_settings())
    rounds = widgets.IntSlider(value=SOFTMAX_PANEL["rounds"], min=10, max=SOFTMAX_PANEL_MAX_ROUNDS, step=10,
                               description="rounds", continuous_update=False)
    setting = widgets.Dropdown(options=labels, value=labels[0], description="setting", style=LABEL_STYLE,
                               layout=widgets.Layout(width="32em"))
    return explained_interact(render, name="federated_softmax", rounds=rounds, setting=setting)


def softmax_warm_settings() -> list[dict]:
    """What lesson 04's panel trains before it is shown: every setting it offers, to the slider's maximum."""
    return [{**setting, "rounds": SOFTMAX_PANEL_MAX_ROUNDS} for setting in softmax_panel_settings().values()]
