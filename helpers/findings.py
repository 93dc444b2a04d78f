"""Findings as code: a lesson states a measured result only through this module.

A finding is a sentence rendered from the measured numbers plus the condition under
which that sentence is true. :func:`check` shows the sentence (as Markdown, with the
condition and the numbers it was checked on) when the condition holds, and raises
:class:`FindingError` — naming the finding and the numbers — when it does not, so that
nbval fails instead of the lesson saying something its run did not produce.

Where a result can go either way on other data (the mirror's CIFAR-10 subset vs the
complete archive, fast vs full mode), :func:`choose` picks the sentence from the numbers:
it takes several (condition, sentence) cases and states the first whose condition holds.

Example::

    check("FedAvg is close to centralised",
          "FedAvg's best test RMSE, {fedavg:.4f}, is {gap:+.2%} from centralised training's {central:.4f}.",
          "abs(gap) < 0.01", fedavg=0.8687, central=0.8660, gap=0.0031)

Conditions are Python expressions over the numbers' names, evaluated with a few
built-ins only (abs, min, max, all, any, len, sum, round, sorted, zip, range,
enumerate, float, int, isnan).

Every finding stated in a session is remembered; :func:`recap` lists them, for a lesson's summary.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field

_SAFE_BUILTINS = {"abs": abs, "min": min, "max": max, "all": all, "any": any, "len": len,
                  "sum": sum, "round": round, "sorted": sorted, "zip": zip, "range": range,
                  "enumerate": enumerate, "float": float, "int": int, "isnan": math.isnan}

_STATED: dict[str, "Finding"] = {}  # name → latest statement; a re-run cell replaces its finding


class FindingError(AssertionError):
    """A lesson's finding does not hold for the numbers of this run."""


@dataclass(frozen=True)
class Finding:
    """A checked sentence.

    Attributes:
        name: short title, e.g. "FedAvg is close to centralised".
        sentence: the rendered sentence (numbers filled in).
        condition: the expression that made it true.
        numbers: the measured values it was checked on (name → value).
    """

    name: str
    sentence: str
    condition: str
    numbers: dict = field(default_factory=dict)

    def _checked_on(self) -> str:
        shown = ", ".join(f"{k} = {_short(v)}" for k, v in self.numbers.items())
        return f"checked: `{self.condition}`" + (f" with {shown}" if shown else "")

    def _repr_markdown_(self) -> str:
        return f"**Finding — {_titled(self.name)}** {self.sentence}  \n<sub>{self._checked_on()}</sub>"

    def __str__(self) -> str:
        return f"Finding — {_titled(self.name)} {self.sentence} [{self._checked_on().replace('`', '')}]"

    __repr__ = __str__


@dataclass(frozen=True)
class Recap:
    """Several findings shown as one Markdown list."""

    findings: tuple
    with_checks: bool = True

    def _repr_markdown_(self) -> str:
        if not self.findings:
            return "_No findings were stated in this run._"
        return "\n".join(f"- **{_titled(f.name)}** {f.sentence}"
                         + (f" <sub>({f._checked_on()})</sub>" if self.with_checks else "")
                         for f in self.findings)

    def __str__(self) -> str:
        return "\n".join(f"- {_titled(f.name)} {f.sentence}" for f in self.findings)

    __repr__ = __str__


def _titled(name: str) -> str:
    """A finding's name as a heading: closed by a full stop unless it already ends in punctuation."""
    return name if name[-1:] in ".?!…" else name + "."


def _short(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"[{', '.join(_short(v) for v in value[:8])}, …]"
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(_short(v) for v in value)}]"
    return str(value)


def _plain(value):
    """NumPy scalars and arrays → Python floats/ints/lists, so conditions and messages read plainly."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def holds(condition: str, numbers: dict) -> bool:
    """Evaluate ``condition`` over ``numbers``; a condition that cannot be evaluated is an error."""
    if not isinstance(condition, str) or not condition.strip():
        raise ValueError("a finding needs its condition as a non-empty expression string")
    try:
        # numbers go in as globals so that generator expressions in the condition see them too
        result = eval(condition, {"__builtins__": _SAFE_BUILTINS, **numbers})  # noqa: S307 - lesson code
    except Exception as error:  # a typo in a condition must not pass silently
        raise ValueError(f"cannot evaluate the condition {condition!r} on {sorted(numbers)}: {error}") from error
    return bool(result)


def _names(condition: str) -> set[str]:
    """The names an expression reads (a condition that cannot be parsed is an error)."""
    try:
        tree = ast.parse(condition, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"cannot evaluate the condition {condition!r}: {error}") from error
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def _state(name: str, sentence: str, condition: str, numbers: dict, otherwise: bool) -> Finding:
    """:func:`check`'s work; ``otherwise`` admits the constant "True", the last case of :func:`choose`."""
    if not isinstance(condition, str) or not condition.strip():
        raise ValueError("a finding needs its condition as a non-empty expression string")
    numbers = {k: _plain(v) for k, v in numbers.items()}
    try:
        text = sentence.format(**numbers)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"finding {name!r}: the sentence cannot be rendered from {sorted(numbers)}: {error}") from error
    if not holds(condition, numbers):
        raise FindingError(
            f"finding {name!r} does not hold in this run: `{condition}` is false with "
            + ", ".join(f"{k} = {_short(v)}" for k, v in numbers.items())
            + f". The lesson would have said: {text}")
    if not (otherwise and condition.strip() == "True") and not _names(condition) & numbers.keys():
        raise ValueError(f"finding {name!r}: the condition {condition!r} reads none of its numbers "
                         f"{sorted(numbers)}, so no run could make it fail")
    finding = Finding(name, text, condition, numbers)
    _STATED[name] = finding
    return finding


def check(name: str, sentence: str, condition: str, /, **numbers) -> Finding:
    """State ``sentence`` (a ``str.format`` template over ``numbers``) if ``condition`` holds.

    Args:
        name: the finding's short title.
        sentence: template, e.g. ``"FedAvg ends {gap:+.1%} from centralised"``.
        condition: expression over the numbers' names, e.g. ``"abs(gap) < 0.01"``.
        **numbers: the measured values (floats, ints, lists; NumPy values are converted).

    Returns:
        The :class:`Finding`; as the last expression of a cell it shows as Markdown.

    Raises:
        FindingError: the condition is false for these numbers.
        ValueError: the condition cannot be evaluated, reads none of the numbers (it could not
            fail), or the template names a missing number.
    """
    return _state(name, sentence, condition, numbers, otherwise=False)


def choose(name: str, cases: list[tuple[str, str]], /, **numbers) -> Finding:
    """State the sentence of the first case whose condition holds.

    Args:
        name: the finding's short title.
        cases: ``[(condition, sentence template), …]`` in order of preference; make the
            conditions cover every outcome the data can give (the last may be ``"True"``).
        **numbers: the measured values.

    Raises:
        FindingError: no case holds (the outcomes were not covered).
    """
    if not cases:
        raise ValueError(f"finding {name!r}: give at least one (condition, sentence) case")
    numbers = {k: _plain(v) for k, v in numbers.items()}
    for condition, sentence in cases:
        if holds(condition, numbers):
            return _state(name, sentence, condition, numbers, otherwise=True)
    raise FindingError(
        f"finding {name!r}: none of the cases {[c for c, _ in cases]} holds with "
        + ", ".join(f"{k} = {_short(v)}" for k, v in numbers.items()))


def report(*findings: Finding) -> Recap:
    """Show several findings of one cell together."""
    return Recap(tuple(findings))


def recap() -> Recap:
    """Every finding stated so far in this session, once each, in order (for a lesson's summary)."""
    return Recap(tuple(_STATED.values()), with_checks=False)


def forget() -> None:
    """Clear the session's list of stated findings (tests use it)."""
    _STATED.clear()


def difference(a, b) -> tuple[float, float, int]:
    """Mean and standard error of the per-seed difference a_i − b_i (the same seeds, paired), and n.

    With n < 2 the standard error is infinite: one seed says nothing about the spread.
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) != len(b) or not a:
        raise ValueError(f"paired comparison needs the same seeds for both methods, got {len(a)} and {len(b)} values")
    d = [x - y for x, y in zip(a, b)]
    n, mean = len(d), sum(d) / len(d)
    if n < 2:
        return mean, math.inf, n
    spread = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean, spread / math.sqrt(n), n


# ---------------------------------------------------------------- the course's rule at 95 %
#
# How the course decides (TEACHING.md, "How the course decides"): a pair of methods, fixed before
# the numbers are seen, is compared on the same seeds. Two sources of noise are judged, each at
# 95 % two-sided: the seeds' (the mean per-seed difference against Student's t with n − 1 degrees
# of freedom) and, for a metric averaged over test units (users, ratings, images), the test set's
# own (a paired bootstrap over those units: both methods scored on the same resample, per seed).
# A pair's p-value is the larger of the two; several pairs in one finding are corrected by Holm's
# step-down method, and a winner is named only when the corrected p-value is at most 0.05.

CONFIDENCE = 0.95
ALPHA = round(1 - CONFIDENCE, 10)  # a winner needs p ≤ 0.05 after Holm
BOOTSTRAP_RESAMPLES = 1000  # p-values down to 0.002: enough for Holm over 20 pairs at 0.05
UNIT_STATISTICS = ("mean", "rmse")  # a metric is the units' mean (Σ sum / Σ count), or its square root


def t_critical(seeds: int, confidence: float = CONFIDENCE) -> float:
    """Student's t critical value for a two-sided ``confidence`` interval of a mean over ``seeds``
    paired differences (``seeds`` − 1 degrees of freedom): 4.30 for 3 seeds at 95 %, 2.78 for 5."""
    from scipy import stats

    if seeds < 2:
        raise ValueError(f"a spread needs at least 2 seeds, got {seeds}")
    return float(stats.t.ppf(0.5 + confidence / 2, seeds - 1))


def seed_test(a, b, confidence: float = CONFIDENCE) -> tuple[float, tuple[float, float], float]:
    """The paired t test over seeds: (mean difference a − b, its ``confidence`` interval, two-sided
    p-value). With one seed the interval is unbounded and p = 1; with no spread at all p is 0 for a
    non-zero difference and 1 for none."""
    from scipy import stats

    d, se, n = difference(a, b)
    if n < 2:
        return d, (-math.inf, math.inf), 1.0
    if se == 0:
        return d, (d, d), 0.0 if d != 0 else 1.0
    half = t_critical(n, confidence) * se
    return d, (d - half, d + half), float(2 * stats.t.sf(abs(d) / se, n - 1))


def _as_sums(values):
    """Per-unit values as (U, 2) float64 (sum, count): a 1-D array is one value per unit (count 1)."""
    import numpy as np

    values = np.asarray(values, np.float64)
    if values.ndim == 1:
        return np.column_stack([values, np.ones(len(values))])
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"per-unit values must be (U,) values or (U, 2) (sum, count) pairs, got shape {values.shape}")
    return values


def _unit_metric(sums, statistic: str):
    """The metric of per-unit (sum, count) pairs (..., U, 2): Σ sum / Σ count, or its square root."""
    import numpy as np

    mean = sums[..., 0].sum(axis=-1) / sums[..., 1].sum(axis=-1)
    return np.sqrt(mean) if statistic == "rmse" else mean


def unit_bootstrap(units_a, units_b, statistic: str = "mean", confidence: float = CONFIDENCE,
                   resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                   paired: bool = True) -> tuple[tuple[float, float], float, int | tuple[int, int]]:
    """The paired bootstrap over test units: the units are drawn with replacement, and on each draw
    both methods' metric is recomputed, per seed, on the same units; the statistic is the mean over
    seeds of the difference a − b.

    A unit is what the test set samples: a user, an image, a rating. Its value is either one number
    (a hit 0/1 per user for HR@10, a correct 0/1 per image) or a (sum, count) pair — for instance a
    user's summed squared error over their test ratings and how many there are, so that the metric
    Σ sum / Σ count (``statistic="mean"``) or its square root (``"rmse"``) is the metric over every
    rating while the draws keep each user's ratings together.

    Args:
        units_a, units_b: the two methods' per-unit values, either one array each with a leading seed
            axis — every seed scored on the same units, which are then drawn once for all seeds — or a
            list with one array per seed, when each seed has its own test units (its own split): each
            seed's units are then drawn on their own. Both methods share units unless ``paired`` is
            False.
        statistic: ``"mean"`` or ``"rmse"`` (the square root of the mean).
        paired: False when the two methods were scored on different test units (e.g. the cold users
            of two different β): each method's units are then drawn on their own.

    Returns:
        (``confidence`` percentile interval of the difference, two-sided p-value — twice the smaller
        share of draws on either side of zero, counting the observed sample —, units per seed
        (their mean, rounded, when seeds have their own; unpaired, each method's: (a's, b's))).
    """
    import numpy as np

    if statistic not in UNIT_STATISTICS:
        raise ValueError(f"statistic must be one of {UNIT_STATISTICS}, got {statistic!r}")
    shared = not isinstance(units_a, (list, tuple))
    per_seed_a = [_as_sums(u) for u in (np.asarray(units_a) if shared else units_a)]
    per_seed_b = [_as_sums(u) for u in (np.asarray(units_b) if shared else units_b)]
    same = [u.shape for u in per_seed_a] == [u.shape for u in per_seed_b]
    if (paired and not same) or len(per_seed_a) != len(per_seed_b) \
            or min(len(u) for u in per_seed_a + per_seed_b) < 2:
        raise ValueError(f"a {'paired ' if paired else ''}bootstrap needs both methods' values on the same "
                         f"{'(seeds, units)' if paired else 'seeds'}, at least 2 units; got "
                         f"{[u.shape for u in per_seed_a]} and {[u.shape for u in per_seed_b]}")
    rng = np.random.default_rng(seed)
    draws = np.zeros(resamples)
    for start in range(0, resamples, 100):                         # 100 draws at a time bound the memory
        size = min(100, resamples - start)
        picked = rng.integers(0, len(per_seed_a[0]), size=(size, len(per_seed_a[0]))) if shared and paired else None
        for a, b in zip(per_seed_a, per_seed_b):
            if paired:
                chosen = picked if shared else rng.integers(0, len(a), size=(size, len(a)))
                draws[start:start + size] += _unit_metric(a[chosen], statistic) - _unit_metric(b[chosen], statistic)
            else:
                draws[start:start + size] += (_unit_metric(a[rng.integers(0, len(a), size=(size, len(a)))], statistic)
                                              - _unit_metric(b[rng.integers(0, len(b), size=(size, len(b)))], statistic))
    draws /= len(per_seed_a)
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    p = min(1.0, 2 * (1 + min(np.sum(draws <= 0), np.sum(draws >= 0))) / (resamples + 1))
    counts = tuple(round(sum(len(u) for u in units) / len(units)) for units in (per_seed_a, per_seed_b))
    return (float(low), float(high)), float(p), counts[0] if paired else counts


def holm(p_values) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: sorted ascending, the k-th smallest
    (k = 1 … m) is multiplied by m − k + 1, capped at 1 and made non-decreasing. A pair is
    significant at level α when its adjusted value is at most α; this controls the chance of any
    false winner among the m pairs."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [1.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class PairDecision:
    """One pair's verdict under the course's rule (:func:`decide_pairs`).

    Attributes:
        a, b: the methods.  difference: mean over seeds of a − b (the metric's units).
        seeds: how many.  seed_interval: its 95 % Student-t interval over the seeds.
        unit_interval: its 95 % paired-bootstrap interval over the test units (None without units).
        units: test units per seed (None without units; (a's, b's) when each was scored on its own).
        p: the p-value decided on, after Holm's
        correction over the pairs judged together.  winner: a or b when p ≤ 0.05, else None.
    """

    a: str
    b: str
    difference: float
    seeds: int
    seed_interval: tuple
    unit_interval: tuple | None
    units: int | tuple[int, int] | None
    p: float
    winner: str | None


def decide_pairs(results: dict, pairs, higher_is_better: bool = True, units: dict | None = None,
                 statistic: str = "mean", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 paired_units: bool = True) -> list[PairDecision]:
    """The course's rule (see the block comment above) for ``pairs`` judged together: per pair the
    seeds' paired t test and, with ``units``, the paired bootstrap over the test units; the larger
    p-value, corrected by Holm over the pairs; a winner only at p ≤ 0.05. Arguments as
    :func:`compare_at_95`."""
    if not pairs:
        raise ValueError("name the pairs to compare before looking at the numbers")
    missing = sorted({m for pair in pairs for m in pair} - set(results))
    if missing:
        raise ValueError(f"no results for {missing}; measured: {sorted(results)}")
    sign = 1.0 if higher_is_better else -1.0
    tested = []
    for a, b in pairs:
        d, seed_interval, seed_p = seed_test(results[a], results[b])
        unit = (unit_bootstrap(units[a], units[b], statistic, resamples=resamples, seed=seed, paired=paired_units)
                if units else None)
        tested.append((a, b, d, seed_interval, seed_p, unit))
    adjusted = holm([max(seed_p, unit[1] if unit else 0.0) for *_, seed_p, unit in tested])
    return [PairDecision(a, b, d, len(results[a]), seed_interval, unit[0] if unit else None,
                         unit[2] if unit else None, q,
                         ((a if sign * d > 0 else b) if q <= ALPHA else None))
            for (a, b, d, seed_interval, _, unit), q in zip(tested, adjusted)]


def _interval_spans(decision: PairDecision, fmt: str, unit_name: str) -> list[str]:
    """A decision's 95 % intervals as words: over the seeds ("unknown" with one seed) and, if
    measured, over the test units."""
    spans = [f"over {decision.seeds} seeds {decision.seed_interval[0]:+{fmt}} to {decision.seed_interval[1]:+{fmt}}"
             if decision.seeds > 1 else "over 1 seed unknown (one seed)"]
    if decision.unit_interval:
        counted = (f"{decision.units[0]:,} and {decision.units[1]:,}" if isinstance(decision.units, tuple)
                   else f"{decision.units:,}")
        spans.append(f"over {counted} {unit_name} {decision.unit_interval[0]:+{fmt}} to "
                     f"{decision.unit_interval[1]:+{fmt}}")
    return spans


def _judged_by(units, unit_name: str, paired_units: bool) -> str:
    """What a decision was judged on, in words, for the sentence's closing parenthesis."""
    return "Student's t over the seeds" + (f" and a {'paired ' if paired_units else ''}bootstrap over the {unit_name}"
                                          if units else "")


def compare_at_95(name: str, results: dict, /, metric: str, pairs, higher_is_better: bool = True,
                  units: dict | None = None, statistic: str = "mean", unit_name: str = "test units",
                  fmt: str = ".4f", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                  paired_units: bool = True) -> Finding:
    """The course's comparison rule (see the block comment above): per pair (A, B), fixed in
    advance, "A ahead of B by d (95 % CI …)" only when Holm's adjusted p-value — of the larger of the
    seeds' t test and the paired bootstrap over ``units`` — is at most 0.05; otherwise "no measurable
    difference at this budget". Each clause gives the difference, its 95 % interval over the seeds
    and, with ``units``, over the test units, and the p-value the decision was made on (with several
    pairs an interval can clear zero while the adjusted p-value stays above 0.05).

    Args:
        name: the finding's title.
        results: method → per-seed values of ``metric`` (the same seeds, in the same order, for all).
        metric: what the values are ("cold users' RMSE"), named in the sentence.
        pairs: the (A, B) pairs to compare, chosen before the numbers were seen (no default: a
            "best test mean against the rest" would pick and test on the same numbers).
        higher_is_better: whether larger values win.
        units: method → per-unit values whose ``statistic`` is each seed's value of ``metric``, as
            :func:`unit_bootstrap` takes them ((seeds, U), or one array per seed); None for a metric
            with no test-set sampling to judge.
        unit_name: what the units are ("cold users", "test ratings"), named in the sentence.
        paired_units: False when the pairs were scored on different test units (each method's
            units are then resampled on their own; :func:`unit_bootstrap`).

    Returns:
        The :class:`Finding`; its condition says, per pair, whether the adjusted p-value ``q{i}`` was
        at most ``alpha``, so a rerun whose numbers would flip a clause fails.
    """
    try:
        decisions = decide_pairs(results, pairs, higher_is_better, units, statistic, resamples, seed, paired_units)
    except ValueError as error:
        raise ValueError(f"finding {name!r}: {error}") from error
    numbers, clauses, conditions = {"alpha": ALPHA}, [], []
    for i, decision in enumerate(decisions):
        a, b, d, q = decision.a, decision.b, decision.difference, decision.p
        numbers.update({f"d{i}": d, f"q{i}": q})
        spans = _interval_spans(decision, fmt, unit_name)
        decided = f"p = {q:.2g}" + (" after Holm" if len(decisions) > 1 else "")
        interval = "95 % CI of the difference " + "; ".join(spans + [decided])
        if decision.winner:
            behind = b if decision.winner == a else a
            clauses.append(f"{decision.winner} ahead of {behind} by {abs(d):{fmt}} ({a} − {b}: {interval})")
        else:
            clauses.append(f"{a} vs {b}: no measurable difference at this budget ({d:+{fmt}}; {interval})")
        conditions.append(f"q{i} <= alpha" if decision.winner else f"q{i} > alpha")
    judged = _judged_by(units, unit_name, paired_units)
    sentence = (f"On {metric}: " + "; ".join(clauses) + f" (95 % two-sided: {judged}"
                + (f"; Holm's correction over the {len(decisions)} pairs" if len(decisions) > 1 else "") + ").")
    return check(name, sentence.replace("{", "{{").replace("}", "}}"), " and ".join(conditions), **numbers)


def close_at_95(name: str, results: dict, /, a: str, b: str, tolerance: float, metric: str,
                units: dict | None = None, statistic: str = "mean", unit_name: str = "test units",
                fmt: str = ".4f", resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                paired_units: bool = True) -> Finding:
    """"A is as good as B", under the course's rule: A is within ± ``tolerance`` (a share of B's mean)
    of B only when the difference's 95 % interval over the seeds and, with ``units``, its 95 %
    interval over the test units both lie inside that band; otherwise the sentence says the
    closeness cannot be shown at this budget and how far the intervals reach. One seed never shows
    it (its spread over seeds is unknown). Arguments as :func:`compare_at_95`; ``tolerance`` e.g.
    0.01 for 1 %, fixed before the numbers are seen.

    Returns:
        The :class:`Finding`; its condition is whether both intervals lie inside the band, so a rerun
        whose numbers would flip the sentence fails.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"finding {name!r}: tolerance is a share of {b}'s mean in (0, 1), got {tolerance}")
    try:
        decision = decide_pairs(results, [(a, b)], units=units, statistic=statistic, resamples=resamples, seed=seed,
                                paired_units=paired_units)[0]
    except ValueError as error:
        raise ValueError(f"finding {name!r}: {error}") from error
    reference = sum(map(float, results[b])) / len(results[b])
    intervals = [decision.seed_interval] + ([decision.unit_interval] if decision.unit_interval else [])
    low, high = min(i[0] for i in intervals) / abs(reference), max(i[1] for i in intervals) / abs(reference)
    said = (f"{a} − {b} = {decision.difference:+{fmt}} ({decision.difference / abs(reference):+.2%} of {b}'s "
            f"{reference:{fmt}}); 95 % CI " + "; ".join(_interval_spans(decision, fmt, unit_name)))
    judged = _judged_by(units, unit_name, paired_units)
    numbers = {"low": low, "high": high, "tolerance": tolerance}
    inside = "-tolerance <= low and high <= tolerance"
    if -tolerance <= low and high <= tolerance:
        sentence = (f"On {metric}, {a} is within ±{tolerance:.0%} of {b}: {said} — every interval inside "
                    f"±{tolerance:.0%} (95 % two-sided: {judged}).")
        return check(name, sentence.replace("{", "{{").replace("}", "}}"), inside, **numbers)
    reach = (f"the intervals reach {low:+.2%} to {high:+.2%} of {b}'s value" if decision.seeds > 1
             else "with one seed the spread over seeds is unknown")
    sentence = (f"On {metric}, {a} cannot be shown within ±{tolerance:.0%} of {b} at this budget: {said} — {reach} "
                f"(95 % two-sided: {judged}).")
    return check(name, sentence.replace("{", "{{").replace("}", "}}"), f"not ({inside})", **numbers)
