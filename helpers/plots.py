"""Matplotlib figures used by the lessons. Each function draws and returns the figure."""

from __future__ import annotations

import io

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np


def plot_training_loss(loss: list[float], title: str, ylabel: str = "cross-entropy (nats)"):
    """Training loss per epoch."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    epochs = np.arange(1, len(loss) + 1)
    ax.plot(epochs, loss, marker="o")
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_temperature(summary: dict, titles: list[str], temperature: float):
    """Left: the top-k probabilities with titles. Right: P(c|u) against rank, log scale.

    Args:
        summary: output of :func:`helpers.softmax.temperature_summary`.
        titles: k item titles, best first.
        temperature: T, shown in the title.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1.2, 1]})
    k = len(titles)
    left.barh(np.arange(k)[::-1], summary["top_probs"], color="tab:blue")
    left.set_yticks(np.arange(k)[::-1], [t[:40] for t in titles], fontsize=8)
    left.set(xlabel="P(item | user) among unrated items", title=f"Top-{k} at T = {temperature:.2g}: "
             f"{summary['mass_top_k']:.0%} of the probability mass")
    sorted_probs = np.sort(summary["probs"][summary["probs"] > 0])[::-1]  # the candidates only
    right.loglog(np.arange(1, len(sorted_probs) + 1), sorted_probs)
    right.axvline(k, color="grey", ls="--", lw=1)
    right.set(xlabel="rank among unrated items (1 = most probable)", ylabel="P(item | user)",
              title=f"Entropy {summary['entropy_bits']:.1f} of {summary['max_entropy_bits']:.1f} bits")
    right.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig



def temperature_figure(scores: np.ndarray, titles, temperature: float, k: int = 10, exclude=None):
    """The temperature widget's callback: one user's distribution at temperature T.

    Args:
        scores: (I,) logits of one user.
        titles: sequence of I item titles, indexed like ``scores``.
        temperature: T > 0 (ValueError otherwise).
        k: length of the top list.
        exclude: items the user already rated; left out as in the ranking.
    """
    from helpers.softmax import temperature_summary

    summary = temperature_summary(scores, temperature, k, exclude=exclude)
    return plot_temperature(summary, [titles[i] for i in summary["top_items"]], temperature)


def plot_contour_paths(grid_a, grid_b, grid_loss, paths: dict, optimum, title: str):
    """Loss contours of a 2-parameter model with gradient-descent paths drawn on top.

    Args:
        grid_a, grid_b, grid_loss: 2-D arrays (meshgrid) of a, b and L(a, b) in stars².
        paths: label → (steps + 1, 2) array of visited (a, b).
        optimum: (a*, b*), marked with a star.
    """
    fig, ax = plt.subplots(figsize=(7, 5.5))
    levels = np.quantile(grid_loss, np.linspace(0.0, 0.9, 14) ** 2)
    contour = ax.contour(grid_a, grid_b, grid_loss, levels=np.unique(levels), cmap="viridis", linewidths=0.8)
    ax.clabel(contour, fontsize=7, fmt="%.2f")
    colors = ["tab:blue", "tab:green", "tab:red", "tab:orange"]
    for order, ((label, path), color) in enumerate(zip(paths.items(), colors)):
        ax.plot(path[:, 0], path[:, 1], "-o", ms=2.5, lw=1, color=color, label=label, zorder=10 - order)
    ax.plot(*optimum, "k*", ms=14, label="least-squares optimum")
    ax.set(xlim=(grid_a.min(), grid_a.max()), ylim=(grid_b.min(), grid_b.max()),
           xlabel="a (intercept, stars)", ylabel="b (weight on the item's mean rating)", title=title)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


RMSE_LABELS = {"test_rmse": "test RMSE", "valid_rmse": "validation RMSE", "train_rmse": "training RMSE"}


def _rmse_axis_label(metric: str) -> str:
    """The y-axis label of an RMSE ``metric`` (a key of :data:`RMSE_LABELS`); ValueError for any other."""
    if metric not in RMSE_LABELS:
        raise ValueError(f"metric must be one of {', '.join(RMSE_LABELS)}, got {metric!r}")
    return f"{RMSE_LABELS[metric]} (stars)"


def plot_rmse_curves(histories: dict, title: str, baseline: float | None = None, metric: str = "test_rmse"):
    """An RMSE against passes over the data (left) and against wall-clock seconds (right).

    Args:
        histories: label → :class:`helpers.mf.History`.
        baseline: optional horizontal reference (stars), e.g. a tuned model's RMSE.
        metric: ``"test_rmse"``, ``"valid_rmse"`` or ``"train_rmse"`` (:data:`RMSE_LABELS`).
    """
    ylabel = _rmse_axis_label(metric)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for label, history in histories.items():
        values = getattr(history, metric)
        left.plot(np.arange(len(values)), values, marker=".", label=label)
        right.plot(history.seconds, values, marker=".", label=label)
    for ax in (left, right):
        if baseline is not None:
            ax.axhline(baseline, color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
    left.set(xlabel="passes over the training data (epochs)", ylabel=ylabel, title=title)
    right.set(xlabel="training time (seconds)", title="… and against the clock")
    right.set_xscale("symlog", linthresh=1.0)
    right.set_xlim(left=0)
    left.set_xscale("symlog", linthresh=10)
    left.set_xlim(left=0)
    left.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_playground(result: dict, learning_rate: float, batch_size: int, held_out: str = "test"):
    """Training RMSE and the held-out ratings' RMSE (``result["test_rmse"]``, called ``held_out``:
    "test" or "validation") against update steps for one slider setting."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(result["steps"], result["train_rmse"], label="train")
    ax.plot(result["steps"], result["test_rmse"], label=held_out)
    verdict = "diverged" if result["diverged"] else f"{held_out} RMSE {result['test_rmse'][-1]:.3f}"
    ax.set(xlabel="update steps", ylabel="RMSE (stars)",
           title=f"η = {learning_rate:.3g}, batch {batch_size:,}: {verdict} after {result['steps'][-1]:,} steps")
    finite = [v for v in result["train_rmse"] + result["test_rmse"] if np.isfinite(v)]
    if finite:
        ax.set_ylim(min(finite) - 0.02, min(max(finite), 2.0) + 0.02)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_round_diagram():
    """The five steps of a federated round, drawn as a server, three clients and arrows."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set(xlim=(0, 11), ylim=(0, 5.2))
    ax.axis("off")

    def box(x, y, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.08", fc=color, ec="black", lw=1))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    box(3.6, 3.9, 3.8, 1.0, "server: global model\nitem vectors Q, item biases b", "#dbe9f6")
    for k, x in enumerate([0.3, 3.9, 7.5]):
        box(x, 0.3, 3.2, 1.3, f"client {k + 1} (a user)\nown ratings + private p_u, b_u\nlocal copy of Q, b → trains", "#e8f4e2")
        ax.add_artist(FancyArrowPatch((5.2, 3.85), (x + 1.2, 1.7), arrowstyle="-|>", mutation_scale=14, color="tab:blue"))
        ax.add_artist(FancyArrowPatch((x + 2.0, 1.7), (5.8, 3.85), arrowstyle="-|>", mutation_scale=14, color="tab:green"))
    ax.text(0.1, 3.3, "(1) server sends (Q, b)\n     to K sampled clients", color="tab:blue", fontsize=9)
    ax.text(0.1, 2.2, "(2) each client trains on its own\n     data; p_u, b_u never leave it", fontsize=9)
    ax.text(7.4, 3.3, "(3) clients send updates\n     Δ_k = (Q_k − Q, b_k − b) and n_k", color="tab:green", fontsize=9)
    ax.text(7.6, 4.5, "(4) aggregate Δ = Σ (n_k / n) Δ_k\n(5) update Q ← Q + η_s Δ; repeat", fontsize=9)
    ax.set_title("One federated round: the data stays on the clients, only model updates travel")
    fig.tight_layout()
    return fig


def plot_client_distribution(train, test=None):
    """Ratings per client (log scale) and each client's mean rating: why clients are non-IID."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8))
    counts = train.groupby("user_idx").size()
    left.hist(counts, bins=np.logspace(np.log10(counts.min()), np.log10(counts.max()), 30), color="tab:blue")
    left.set_xscale("log")
    left.set(xlabel="training ratings on the client (log scale)", ylabel="clients",
             title=f"Client sizes span {counts.min()}–{counts.max():,} ratings (median {int(counts.median())})")
    means = train.groupby("user_idx")["rating"].mean()
    right.hist(means, bins=30, color="tab:orange")
    right.axvline(train["rating"].mean(), color="black", ls="--", lw=1, label="overall mean")
    right.set(xlabel="client's mean rating (stars)", ylabel="clients",
              title=f"Client means range {means.min():.1f}–{means.max():.1f} stars")
    right.legend()
    fig.tight_layout()
    return fig


def plot_fed_curves(histories: dict, central_rmse: float, title: str, metric: str = "test_rmse",
                    central_label: str = "centralised MF"):
    """An RMSE against rounds (left) and against cumulative MB sent, only touched rows (right).

    Args:
        histories: label → :class:`helpers.fedcore.History` recording ``metric``.
        central_rmse: the centralised model's ``metric`` on the same split (stars), at the epoch
            it was stopped (``central_label`` says which).
        metric: ``"test_rmse"``, ``"valid_rmse"`` or ``"train_rmse"``.
    """
    ylabel = _rmse_axis_label(metric)
    curves = {label: getattr(history, metric) for label, history in histories.items()}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for label, history in histories.items():
        left.plot(np.arange(len(curves[label])), curves[label], label=label)
        right.plot(history.mb, curves[label], label=label)
    for ax in (left, right):
        ax.axhline(central_rmse, color="black", ls="--", lw=1, label=central_label)
        ax.axhline(central_rmse * 1.03, color="grey", ls=":", lw=1, label="centralised + 3%")
        ax.grid(alpha=0.3)
    left.set(xlabel="round", ylabel=ylabel, title=title)
    right.set(xlabel="cumulative MB sent, down + up (touched rows only)", title="… and against communication")
    left.legend(fontsize=8)
    # y from the best RMSE to the RMSE after round 5, over the finite values (a diverged run is inf or NaN)
    finite = [np.asarray(values, dtype=float) for values in curves.values()]
    finite = [values[np.isfinite(values)] for values in finite]
    lows = [values.min() for values in finite if values.size]
    highs = [values[min(5, values.size - 1)] for values in finite if values.size]
    left.set_ylim(min(lows + [central_rmse]) - 0.01, max(highs + [central_rmse]) + 0.02)
    fig.tight_layout()
    return fig


def plot_image_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], per_class: int = 6, title: str = ""):
    """``per_class`` real images of every class, one row per class, names on the left."""
    classes = np.unique(labels)
    fig, axes = plt.subplots(len(classes), per_class, figsize=(per_class * 1.1, len(classes) * 1.15))
    for row, c in enumerate(classes):
        for col, index in enumerate(np.flatnonzero(labels == c)[:per_class]):
            axes[row, col].imshow(images[index])
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(class_names[c], rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_transfer_curves(summary_runs, title: str, methods: dict):
    """Target test accuracy against labelled images per class: the mean over seeds, bars ± one
    standard deviation over seeds (none with one seed).

    Args:
        summary_runs: frame with columns ``method, per_class, accuracy`` (one row per run).
        methods: method key → legend label.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method, label in methods.items():
        stats = summary_runs[summary_runs["method"] == method].groupby("per_class")["accuracy"].agg(["mean", "std"])
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ticks = sorted(summary_runs["per_class"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set(xlabel="labelled target images per class (log scale)",
           ylabel="target test accuracy (mean ± sd over seeds)", title=title)
    ax.axhline(0.2, color="grey", ls=":", lw=1, label="chance (5 classes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_accuracy_curves(panels: dict, title: str, reference: float | None = None):
    """Validation accuracy during training, one panel per key.

    Args:
        panels: (panel title, x label) → {curve label → (x, accuracy)}; x in the panel's unit
            (epochs, Adam steps, rounds).
        reference: a dotted horizontal line (chance), or None.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, ((name, xlabel), curves) in zip(axes[0], panels.items()):
        for label, (x, y) in curves.items():
            ax.plot(x, y, marker="o", ms=3, label=label)
        if reference is not None:
            ax.axhline(reference, color="grey", ls=":", lw=1, label="chance")
        ax.set(xlabel=xlabel, ylabel="validation accuracy", title=name, ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_pca(projections: dict, labels: np.ndarray, class_names: list[str], title: str):
    """Side-by-side 2-D PCA scatter plots of features, coloured by class.

    Args:
        projections: panel title → (N, 2) projected features.
    """
    fig, axes = plt.subplots(1, len(projections), figsize=(6 * len(projections), 4.6))
    for ax, (name, points) in zip(np.atleast_1d(axes), projections.items()):
        for c, cname in enumerate(class_names):
            ax.scatter(*points[labels == c].T, s=6, alpha=0.6, label=cname)
        ax.set(xlabel="principal component 1", ylabel="principal component 2", title=name)
    np.atleast_1d(axes)[0].legend(markerscale=3, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_bars(values: dict, title: str, xlabel: str, xlim=None, reference: float | None = None):
    """One horizontal bar per label with its value written on it.

    Args:
        values: label → value, drawn top to bottom in order.
        xlim: x-axis range; None fits the values.  reference: a dotted vertical line (e.g. chance).
    """
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(values) + 1.6))
    names = list(values)
    bars = ax.barh(names[::-1], [values[n] for n in names[::-1]], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f", padding=3)
    ax.set(xlabel=xlabel, title=title)
    if xlim is not None:
        ax.set_xlim(*xlim)
    if reference is not None:
        ax.axvline(reference, color="grey", ls=":", lw=1)
    fig.tight_layout()
    return fig


def plot_attack_outcome(test_rmse: float, hit_rate: float, title: str):
    """What an attack did, one quantity per axis: test RMSE (stars) and the target item's hit rate (share of users)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.4))
    for ax, value, label, limit in ((left, test_rmse, "test RMSE (stars)", max(1.5, test_rmse * 1.1)),
                                    (right, hit_rate, "target movie in users' top-10 (share of users)", 1.0)):
        bar = ax.barh([""], [value], color="tab:blue")
        ax.bar_label(bar, fmt="%.3f", padding=3)
        ax.set(xlabel=label, xlim=(0, limit))
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_domains(source, target, overlap: int, source_name: str, target_name: str):
    """Users per domain and overlap, ratings per user, and rating distributions of two domains.

    Args:
        source, target: frames with ``user`` and ``rating`` columns.
        overlap: number of users who rated in both domains.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    n_source, n_target = source["user"].nunique(), target["user"].nunique()
    bars = axes[0].bar([f"{source_name} only", "both", f"{target_name} only"],
                       [n_source - overlap, overlap, n_target - overlap], color=["tab:blue", "tab:purple", "tab:orange"])
    axes[0].bar_label(bars)
    axes[0].set(ylabel="users", title=f"{overlap:,} users rate both domains")
    bins = np.logspace(0, np.log10(max(source.groupby("user").size().max(), target.groupby("user").size().max())), 30)
    for frame, name, color in [(source, source_name, "tab:blue"), (target, target_name, "tab:orange")]:
        axes[1].hist(frame.groupby("user").size(), bins=bins, alpha=0.6, label=name, color=color)
        shares = frame["rating"].value_counts(normalize=True).sort_index()
        offset = -0.2 if frame is source else 0.2
        axes[2].bar(shares.index + offset, shares.values, width=0.4, label=f"{name} (mean {frame['rating'].mean():.2f})",
                    color=color)
    axes[1].set_xscale("log")
    axes[1].set(xlabel="ratings per user (log scale)", ylabel="users", title="Activity per user")
    axes[1].legend()
    axes[2].set(xlabel="rating (stars)", ylabel="share of ratings", title="Are the two domains rated alike?")
    axes[2].legend()
    fig.tight_layout()
    return fig


def plot_method_bars(results, metric: str, methods: dict, title: str):
    """Grouped bars from zero: one group per β, one bar per method, its mean over seeds with an error
    bar of ± one standard deviation over the seeds (said in the axis label).

    Args:
        results: frame with columns ``method, beta, <metric>`` (one row per run).
        methods: method key → label, in display order.
    """
    stats = results.groupby(["beta", "method"])[metric].agg(["mean", "std"]).reset_index()
    betas = sorted(stats["beta"].unique())
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(12, 4.2))
    for j, (method, label) in enumerate(methods.items()):
        part = stats[stats["method"] == method].set_index("beta").reindex(betas)
        ax.bar(np.arange(len(betas)) + (j - (len(methods) - 1) / 2) * width, part["mean"], width,
               yerr=part["std"].fillna(0), capsize=2, label=label)
    ax.set_xticks(np.arange(len(betas)), [f"β = {b:.0%} cold" for b in betas])
    ax.set_ylim(0, (stats["mean"] + stats["std"].fillna(0)).max() * 1.08)
    ax.set(ylabel=f"{metric} on cold users' hidden ratings (stars;\nmean ± std over seeds)", title=title)
    ax.legend(fontsize=8, ncol=4)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


COLD_START_METRIC_UNITS = {"RMSE": "RMSE (stars)", "MAE": "MAE (stars)",
                           "HR@10": "HR@10 (share of cold users)", "NDCG@10": "NDCG@10 (0–1)"}


def plot_cold_start_scores(scores, beta: float, revealed: int, metric: str, methods: dict, title: str):
    """One row per method: each seed's ``metric`` on the cold users (dots) and the mean over seeds
    (bar from zero), for one β and one number of revealed ratings.

    Args:
        scores: :func:`helpers.fedcrossdomain.scores_frame` (columns beta, seed, revealed, method, metric).
        methods: method key → label, top to bottom.
    """
    if metric not in COLD_START_METRIC_UNITS:
        raise ValueError(f"metric must be one of {list(COLD_START_METRIC_UNITS)}, got {metric!r}")
    part = scores[(scores["beta"] == beta) & (scores["revealed"] == revealed)]
    if part.empty:
        raise ValueError(f"no runs at β = {beta} with {revealed} revealed ratings; measured: β in "
                         f"{sorted(scores['beta'].unique().tolist())}, revealed in {sorted(scores['revealed'].unique().tolist())}")
    shown = [m for m in methods if m in set(part["method"])]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(shown) + 1.4))
    for row, method in enumerate(shown):
        values = part.loc[part["method"] == method, metric].to_numpy()
        color = "C0" if method.startswith("fed") else "C7"  # federated methods blue, the central reference grey
        ax.barh(row, values.mean(), height=0.6, color=color, alpha=0.35)
        ax.plot(values, np.full(len(values), row), "o", color=color, ms=5)
    ax.set_yticks(np.arange(len(shown)), [methods[m] for m in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, part[metric].max() * 1.08)
    ax.set(xlabel=f"{COLD_START_METRIC_UNITS[metric]}: bar the mean, dots the seeds", title=title)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def plot_privacy_utility(frontier, clean_rmse: float, title: str, baseline_rmse: float | None = None):
    """Test RMSE against ε (log scale), one point per noise multiplier, RDP and PLD ε side by side.

    Args:
        frontier: frame with columns ``σ``, ``ε (RDP)``, ``ε (PLD)``, ``test RMSE`` (stars; the mean
            over seeds) and optionally ``SE`` (its standard error, drawn as error bars).
        clean_rmse: the same training without DP (stars).
        baseline_rmse: a model with no private values at all (e.g. :func:`helpers.federated.item_bias_rmse`).
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    errors = frontier["SE"] if "SE" in frontier else None
    for column, marker in (("ε (RDP)", "o"), ("ε (PLD)", "s")):
        ax.errorbar(frontier[column], frontier["test RMSE"], yerr=errors, marker=marker, capsize=3,
                    label=column.replace("ε ", "accountant "))
    for _, row in frontier.iterrows():
        ax.annotate(f"σ = {row['σ']:g}", (row["ε (RDP)"], row["test RMSE"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(clean_rmse, color="black", ls="--", lw=1, label="no DP")
    if baseline_rmse is not None:
        ax.axhline(baseline_rmse, color="tab:red", ls=":", lw=1.5, label="item biases only, μ + b_i (no private values)")
    ax.set_xscale("log")
    ax.set(xlabel="ε (log scale; smaller = more private)", ylabel="test RMSE (stars)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_client_classes(counts_by_alpha: dict, class_names: list[str], title: str):
    """Each client's training images stacked by class, one panel per α.

    Args:
        counts_by_alpha: α → (N, C) counts (:func:`helpers.partition.class_counts`).
    """
    fig, axes = plt.subplots(1, len(counts_by_alpha), figsize=(4.2 * len(counts_by_alpha), 3.6), sharey=True)
    for ax, (alpha, counts) in zip(np.atleast_1d(axes), counts_by_alpha.items()):
        bottom = np.zeros(len(counts))
        for c, name in enumerate(class_names):
            ax.bar(np.arange(len(counts)), counts[:, c], bottom=bottom, label=name, width=0.85)
            bottom += counts[:, c]
        ax.set(xlabel="client", title=f"α = {alpha:g}")
    np.atleast_1d(axes)[0].set_ylabel("training images on the client")
    np.atleast_1d(axes)[-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_accuracy_rounds(panels: dict, target: float | None, title: str):
    """Accuracy on the clients' validation images against rounds, one panel per key of ``panels``;
    a dot marks each run's round chosen on them.

    Args:
        panels: panel title → {curve label → history with ``.valid_accuracy`` (index 0 = start)
            and ``.chosen_round``}.
        target: a dotted horizontal line (the accuracy whose round count is reported).
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (name, curves) in zip(axes[0], panels.items()):
        for label, history in curves.items():
            line, = ax.plot(np.arange(len(history.valid_accuracy)), history.valid_accuracy, label=label)
            ax.plot(history.chosen_round, history.valid_accuracy[history.chosen_round], "o", color=line.get_color())
        if target is not None:
            ax.axhline(target, color="grey", ls=":", lw=1)
        ax.set(xlabel="round", title=name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("validation accuracy (5 classes, chance 0.2)")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_alpha_sweep(sweep, inits: dict, title: str):
    """Test accuracy at the round chosen on validation (left) and the clients' gradient dissimilarity
    B² at the start (right) against α (log scale), one line per start.

    Args:
        sweep: a frame with ``alpha, init, test_accuracy, drift`` (:meth:`FLTLExperiment.sweep`).
        inits: init key → legend label.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for init, label in inits.items():
        rows = sweep[sweep["init"] == init].sort_values("alpha")
        left.plot(rows["alpha"], rows["test_accuracy"], "o-", label=label)
        right.plot(rows["alpha"], rows["drift"], "o-", label=label)
    left.set(xscale="log", xlabel="Dirichlet α (log scale; small = skewed)", ylabel="test accuracy (share correct)",
             title="At the round chosen on validation images")
    right.set(xscale="log", xlabel="Dirichlet α (log scale; small = skewed)",
              ylabel="gradient dissimilarity B² (1 = none)", title="How much clients disagree, at the start")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_personalisation(tables: dict, title: str, metric: str = "accuracy"):
    """Per client: global model (x) against personalised model (y), one panel per key.

    Args:
        tables: panel title → frame with ``global``, ``personalised`` and ``n_test`` columns.
        metric: axis wording; points above the diagonal gained (for accuracy).
    """
    fig, axes = plt.subplots(1, len(tables), figsize=(4.4 * len(tables), 4.2), squeeze=False)
    for ax, (name, table) in zip(axes[0], tables.items()):
        ax.scatter(table["global"], table["personalised"], s=12 + 2 * table["n_test"], alpha=0.6)
        low = min(table["global"].min(), table["personalised"].min())
        ax.plot([low, 1], [low, 1], color="grey", ls="--", lw=1)
        ax.set(xlabel=f"global model: {metric} on the client's own test images",
               ylabel=f"after local fine-tuning (epochs chosen on its validation images): {metric}", title=name)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_rmse_distributions(per_client: dict, title: str):
    """Cumulative share of clients against their own test RMSE, one line per model.

    Args:
        per_client: label → Series of per-client RMSE (stars).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for label, values in per_client.items():
        ordered = np.sort(np.asarray(values))
        ax.plot(ordered, np.arange(1, len(ordered) + 1) / len(ordered),
                label=f"{label} (median {np.median(ordered):.3f})")
    ax.set(xlabel="client's test RMSE on its own ratings (stars)", ylabel="share of clients with RMSE ≤ x",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_xy_curves(panels: dict, ylabel: str, title: str, reference: float | None = None):
    """Curves y against x, one panel per key; x axes in log scale when the panel name says so.

    Args:
        panels: (panel title, x label, log x?) → {curve label → (x, y)}.
        reference: a dotted horizontal line (a target value), or None.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), sharey=True, squeeze=False)
    for ax, ((name, xlabel, logx), curves) in zip(axes[0], panels.items()):
        for label, (x, y) in curves.items():
            ax.plot(x, y, label=label)
        if reference is not None:
            ax.axhline(reference, color="grey", ls=":", lw=1, label="target")
        ax.set(xlabel=xlabel, title=name, xscale="log" if logx else "linear")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=8)
    curves = [np.asarray(y) for c in panels.values() for _, y in c.values()]
    axes[0, 0].set_ylim(min(y.min() for y in curves) - 0.01, max(y[min(5, len(y) - 1)] for y in curves) + 0.02)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_drift_remedies(cnn: dict, mf: dict, cnn_title: str, mf_title: str, title: str):
    """Accuracy on the CIFAR-10 clients' validation images (left) and validation RMSE on MovieLens
    (right) against rounds, one line per method.

    Args:
        cnn: method → history with ``valid_accuracy`` (index 0 = start).  mf: method → history with ``valid_rmse``.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for label, history in cnn.items():
        left.plot(np.arange(len(history.valid_accuracy)), history.valid_accuracy, label=label)
    for label, history in mf.items():
        right.plot(np.arange(len(history.valid_rmse)), history.valid_rmse, label=label)
    left.set(xlabel="round", ylabel="validation accuracy (share correct)", title=cnn_title)
    right.set(xlabel="round", ylabel="validation RMSE (stars)", title=mf_title)
    lows = [min(h.valid_rmse) for h in mf.values()]
    right.set_ylim(min(lows) - 0.01, max(h.valid_rmse[min(10, len(h.valid_rmse) - 1)] for h in mf.values()) + 0.02)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveCurve:
    """One metric against rounds, redrawn in place in a notebook as a run reports progress
    (``update(event)`` with an event of :func:`helpers.flower_rounds.progress_event`); outside
    a notebook it draws nothing. The last drawing stays in the output."""

    def __init__(self, key: str, ylabel: str, label: str):
        from helpers.progress import _in_notebook

        self.key, self.ylabel, self.label = key, ylabel, label
        self.handle = None
        if _in_notebook():
            from IPython.display import display

            self.handle = display(display_id=True)

    def update(self, event: dict) -> None:
        if self.handle is None:
            return
        from IPython.display import Image

        values = event[self.key]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.plot(np.arange(len(values)), values, marker="o")
        ax.set(xlabel="rounds", ylabel=self.ylabel, title=f"{self.label}: {values[-1]:.4f} after {len(values) - 1} rounds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        self.handle.update(Image(buffer.getvalue()))


def plot_flower_vs_local(flower_rmse, local_rmse, flower_seconds, local_seconds, title: str):
    """Test RMSE per round of both runs (left) and seconds per round of both (right, log scale).

    Args:
        flower_rmse, local_rmse: test RMSE (stars) before round 1 and after every round.
        flower_seconds, local_seconds: wall-clock seconds of each round.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    left.plot(np.arange(len(local_rmse)), local_rmse, lw=4, alpha=0.4, label="in this process (simulation)")
    left.plot(np.arange(len(flower_rmse)), flower_rmse, marker="o", ls="--", label="Flower (SuperLink + SuperNodes)")
    left.set(xlabel="rounds", ylabel="test RMSE (stars)", title=title)
    rounds = np.arange(1, len(flower_seconds) + 1)
    right.bar(rounds - 0.2, flower_seconds, width=0.4, label="Flower")
    right.bar(rounds + 0.2, local_seconds, width=0.4, label="in this process")
    right.set(xlabel="round", ylabel="seconds per round", yscale="log", title="Wall-clock time of each round")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fault_run(test_rmse, nodes_answered, seconds, killed_after: int, restarted_after: int, title: str):
    """A run in which a node was killed and restarted: test RMSE per evaluation (left), nodes
    that answered each exchange (middle), seconds per round (right); dotted lines at the kill
    and the restart (both in rounds completed)."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(np.arange(len(test_rmse)), test_rmse, marker="o")
    axes[0].set(xlabel="message exchange t (the model after t rounds)", ylabel="test RMSE (stars)", title=title)
    axes[1].bar(np.arange(len(nodes_answered)), nodes_answered)
    axes[1].yaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].set(xlabel="message exchange (round t; the last evaluates the final model)", ylabel="nodes that answered",
                title="Who answered")
    axes[2].bar(np.arange(1, len(seconds) + 1), seconds)
    axes[2].set(xlabel="round", ylabel="seconds", title="Round time (a silent node is waited for)")
    # exchange t (left, middle) is round t + 1's message, which also evaluates the model after t rounds, so an
    # event after round r falls between exchanges r − 1 and r; the bars (right) are rounds counted from 1
    for ax, shift in zip(axes, (-0.5, -0.5, 0.5)):
        ax.axvline(killed_after + shift, color="red", ls=":", label=f"node killed after round {killed_after}")
        ax.axvline(restarted_after + shift, color="green", ls=":", label=f"node restarted after round {restarted_after}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_ranking_curves(curves: dict, title: str, popular: float, reference: tuple | None = None, window: int = 5):
    """Validation HR@10 against rounds (left) and against cumulative MB uploaded by all clients (right),
    one line per method: the mean over seeds of the HR@10 averaged over the last ``window`` rounds
    (what the round is chosen on), with the seeds' range shaded.

    Args:
        curves: label → list of :class:`helpers.fedcore.History` (one per seed) with ``valid_hr``.
        popular: most-popular's validation HR@10 (dashed).  reference: (label, HR@10) of a line to draw
            too (the centralised model's chosen validation HR@10), or None.
    """
    from helpers.metrics import trailing_mean

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for label, histories in curves.items():
        smoothed = np.array([trailing_mean(h.valid_hr, window) for h in histories])
        mean, rounds = smoothed.mean(axis=0), np.arange(smoothed.shape[1])
        mb = np.mean([h.mb_up for h in histories], axis=0)
        line, = left.plot(rounds, mean, label=f"{label} ({len(histories)} seed{'s' if len(histories) > 1 else ''})")
        right.plot(mb, mean, color=line.get_color())
        if len(histories) > 1:
            for ax, x in ((left, rounds), (right, mb)):
                ax.fill_between(x, smoothed.min(axis=0), smoothed.max(axis=0), color=line.get_color(), alpha=0.15, lw=0)
    for ax in (left, right):
        ax.axhline(popular, color="black", ls="--", lw=1, label="most popular")
        if reference is not None:
            ax.axhline(reference[1], color="grey", ls=":", lw=1.5, label=reference[0])
        ax.grid(alpha=0.3)
    left.set(xlabel="round", ylabel=f"validation HR@10 (mean of last {window} rounds)", title="against rounds")
    right.set_xscale("symlog", linthresh=1.0)
    right.set_xlim(left=0)   # bytes are never negative: no ticks below 0
    right.set_xlabel("cumulative MB uploaded by all clients (1 MB = 10⁶ bytes; log scale above 1)")
    right.set_title("… and against what the clients uploaded")
    left.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
