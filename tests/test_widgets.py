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
    (lambda r: w.federated_controls(r), {"rounds", "algorithm", "clients_per_round", "local_epochs", "client_lr", "server_lr"}),
    (lambda r: w.transfer_controls(r, [10, 50], 3), {"per_class", "unfrozen_blocks"}),
    (lambda r: w.cold_start_controls(r), {"beta", "mapping", "dim"}),
    (lambda r: w.fed_cold_start_controls(r, [0.2, 0.5, 0.8], ["linear", "mlp"], [0, 50], [1, 3, 5]),
     {"beta", "mapping", "mapping_round", "revealed", "metric"}),
    (lambda r: w.dp_controls(r), {"noise_multiplier", "clip_norm", "clients_per_round", "rounds"}),
    (lambda r: w.attack_controls(r), {"attacker_share", "attack", "aggregator"}),
    (lambda r: w.fltl_controls(r, [0.1, 100.0], 20, 10, 2), {"alpha", "clients_per_round", "local_epochs"}),
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


def test_moved_values_stay_inside_each_control():
    assert w.moved_values(w.widgets.Checkbox(value=True)) == [False]
    assert w.moved_values(w.widgets.Dropdown(options=[("a", "x"), ("b", "y"), ("c", "z")], value="y")) == ["x", "z"]
    assert w.moved_values(w.widgets.Dropdown(options=[0.1, 1.0, 100.0], value=0.1)) == [1.0, 100.0]
    assert w.moved_values(w.widgets.IntSlider(value=10, min=5, max=10, step=5)) == [5]        # top: one step down
    assert w.moved_values(w.widgets.FloatSlider(value=0.5, min=0.1, max=0.9, step=0.1)) == [0.6, 0.1, 0.9]
    log = w.widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.5)
    assert np.allclose(w.moved_values(log), [10 ** -0.5, 1e-3, 1.0])
    assert w.moved_values(w.widgets.IntText(value=1)) == [2, 3] and w.moved_values(w.widgets.IntText(value=10)) == [9, 11]
    for control in (w.widgets.IntSlider(value=3, min=1, max=5), w.widgets.FloatLogSlider(value=1.0, min=-1, max=1)):
        assert all(control.min <= (np.log10(v) if isinstance(control, w.widgets.FloatLogSlider) else v) <= control.max
                   for v in w.moved_values(control))


def test_time_panels_moves_every_control_and_restores_it():
    calls = []
    slider, box = w.widgets.IntSlider(value=2, min=1, max=4), w.widgets.Checkbox(value=False)
    panel = w.explained_interact(recorder(calls), name="demo", level=slider, flag=box)
    (report,) = w.time_panels([w.PANELS[-1]])
    assert w.PANELS[-1].interactive is panel.widget and report["panel"] == "demo"
    assert list(report["seconds"]) == ["default", "level=3", "level=1", "level=4", "flag=True",
                                       "then level=3", "then flag=True"]       # the browser check's moves, kept
    assert {"level": 3, "flag": False} in calls and {"level": 2, "flag": True} in calls
    assert {"level": 3, "flag": True} in calls                                     # the second move kept the first
    assert (slider.value, box.value) == (2, False)                                 # back at the defaults
    assert 0 <= report["median"] <= report["max"] == max(report["seconds"].values())


def test_the_browser_sequence_is_the_browser_checks_moves_in_its_order():
    """Sliders first (one step right, left at the top), then menus (next option, wrapping), checkboxes
    (toggled), number boxes (one up), each in panel order; a one-option menu is not moved."""
    controls = {"box": w.widgets.Checkbox(value=True),
                "menu": w.widgets.Dropdown(options=[("a", 1), ("b", 2)], value=2),
                "only": w.widgets.Dropdown(options=["x"]),
                "k": w.widgets.IntText(value=7),
                "top": w.widgets.IntSlider(value=10, min=0, max=10, step=5),
                "rate": w.widgets.FloatLogSlider(value=0.1, base=10, min=-3, max=0, step=0.5),
                "share": w.widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1)}
    moves = w.browser_sequence(controls)
    assert [name for name, _ in moves] == ["top", "rate", "share", "menu", "box", "k"]
    values = dict(moves)
    assert values["top"] == 5 and np.isclose(values["rate"], 10 ** -0.5) and values["share"] == 0.6
    assert values["menu"] == 1 and values["box"] is False and values["k"] == 8
    with pytest.raises(TypeError, match="no move for a Text"):
        w.browser_sequence({"name": w.widgets.Text()})


def test_the_browser_check_finds_every_lesson_panel_and_honours_the_choice(monkeypatch):
    """Each lesson's panel cells are the cells that call a panel maker of this module, as many as the
    panels its committed run shows; COURSE_BROWSER_LESSONS picks lessons ('all' by default, 'none')."""
    import json
    from pathlib import Path

    from browser_panels import panel_cells
    from conftest import BROWSER_ENV, NOTEBOOKS, browser_lessons

    for name in w.lessons_with_panels(NOTEBOOKS):
        cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
        shown = [i for i, c in enumerate(cells) if c["cell_type"] == "code" and any(
            "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in c.get("outputs", []))]
        assert panel_cells(Path(NOTEBOOKS / name)) == shown, name
    monkeypatch.delenv(BROWSER_ENV, raising=False)
    assert browser_lessons() == w.lessons_with_panels(NOTEBOOKS) and len(browser_lessons()) == 10
    monkeypatch.setenv(BROWSER_ENV, "none")
    assert browser_lessons() == []
    monkeypatch.setenv(BROWSER_ENV, "01 06")
    assert browser_lessons() == ["01_softmax_scoring.ipynb", "06_movie_to_music_transfer.ipynb"]
