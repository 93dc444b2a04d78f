"""The plots' own promises: axes that say what they show, nothing below zero on an axis of bytes."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers import plots  # noqa: E402


def test_ranking_curves_start_the_bytes_axis_at_zero_and_title_the_figure():
    """Lesson 04's curves: MB uploaded never goes below 0 (a symlog axis drew −10² ticks), and the
    finding-stating title spans the figure instead of running into the right panel's title."""
    seeds = [SimpleNamespace(valid_hr=list(np.linspace(0.01, 0.06 + s / 100, 11)), mb_up=list(np.linspace(0, 500, 11)))
             for s in range(2)]
    figure = plots.plot_ranking_curves({"FedAvg": seeds}, "Validation HR@10 passes most-popular's at round 4", 0.03)
    left, right = figure.axes
    assert right.get_xlim()[0] == 0
    assert figure.get_suptitle() == "Validation HR@10 passes most-popular's at round 4"
    assert left.get_title() == "against rounds" and "MB" in right.get_xlabel() and "HR@10" in left.get_ylabel()
    plt.close(figure)


def test_accuracy_curves_are_labelled_as_validation_accuracy():
    """Lesson 05 draws the source's and the target runs' curves on validation images, never test images."""
    figure = plots.plot_accuracy_curves({("source task", "epoch"): {"validation accuracy": ([1, 2, 3], [0.5, 0.6, 0.7])}},
                                        "Source model", reference=0.2)
    assert figure.axes[0].get_ylabel() == "validation accuracy" and figure.axes[0].get_xlabel() == "epoch"
    plt.close(figure)
