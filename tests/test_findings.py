"""helpers.findings: a finding is shown only when its condition holds; otherwise the cell fails."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import findings
from helpers.findings import FindingError


@pytest.fixture(autouse=True)
def fresh_recap():
    findings.forget()
    yield
    findings.forget()


def test_check_renders_the_sentence_from_the_numbers_and_shows_the_condition():
    f = findings.check("FedAvg is close to centralised", "FedAvg ends {gap:+.1%} from centralised ({fed:.4f}).",
                       "abs(gap) < 0.01", gap=0.0031, fed=0.8687)
    assert f.sentence == "FedAvg ends +0.3% from centralised (0.8687)."
    markdown = f._repr_markdown_()
    assert "**Finding — FedAvg is close to centralised.**" in markdown
    assert "abs(gap) < 0.01" in markdown and "gap = 0.0031" in markdown


def test_a_false_condition_raises_and_names_the_finding_and_the_numbers():
    with pytest.raises(FindingError) as error:
        findings.check("over a hundred times cheaper", "Touched rows are {ratio:.0f}× cheaper.", "ratio > 100", ratio=70.2)
    message = str(error.value)
    assert "over a hundred times cheaper" in message and "ratio = 70.2" in message and "ratio > 100" in message


def test_numpy_values_are_plain_numbers_in_conditions():
    np = pytest.importorskip("numpy")
    f = findings.check("monotone", "RMSE rises with σ: {rmse}.", "all(a < b for a, b in zip(rmse, rmse[1:]))",
                       rmse=np.array([0.90, 0.91, 0.94]))
    assert f.numbers["rmse"] == [0.90, 0.91, 0.94]


def test_choose_states_the_first_case_that_holds():
    cases = [("transfer > scratch", "Transfer wins by {d:+.3f}."),
             ("transfer < scratch", "Scratch wins by {d:+.3f}."),
             ("True", "They tie.")]
    assert findings.choose("who wins", cases, transfer=0.6, scratch=0.5, d=0.1).sentence == "Transfer wins by +0.100."
    assert findings.choose("who wins", cases, transfer=0.5, scratch=0.6, d=-0.1).sentence == "Scratch wins by -0.100."
    assert findings.choose("who wins", cases, transfer=0.5, scratch=0.5, d=0.0).sentence == "They tie."


def test_choose_fails_when_no_case_covers_the_outcome():
    with pytest.raises(FindingError, match="none of the cases"):
        findings.choose("who wins", [("a > b", "a wins")], a=1, b=2)


def test_a_condition_with_a_typo_or_a_sentence_with_a_missing_number_is_an_error_not_a_pass():
    with pytest.raises(ValueError, match="cannot evaluate"):
        findings.check("typo", "x is {x}", "x > thershold", x=1)
    with pytest.raises(ValueError, match="cannot be rendered"):
        findings.check("missing", "x is {y}", "x > 0", x=1)
    with pytest.raises(ValueError, match="condition"):
        findings.check("empty", "x is {x}", "", x=1)


def test_conditions_cannot_reach_python_builtins():
    with pytest.raises(ValueError, match="cannot evaluate"):
        findings.check("no imports", "x", "__import__('os') is not None", x=1)


def test_recap_lists_each_finding_once_in_order_and_a_rerun_replaces_it():
    findings.check("first", "one {x}", "x == 1", x=1)
    findings.check("second", "two", "y > 0", y=1)
    findings.check("first", "one again {x}", "x == 2", x=2)
    recap = findings.recap()
    assert [f.name for f in recap.findings] == ["first", "second"]
    assert "one again 2" in recap._repr_markdown_()


def test_report_shows_several_findings_with_their_checks():
    a = findings.check("a", "A.", "u < 1", u=0)
    b = findings.check("b", "B {v}.", "v > 0", v=3)
    markdown = findings.report(a, b)._repr_markdown_()
    assert markdown.splitlines()[0].startswith("- **a.** A.") and "v > 0" in markdown


def test_generator_expressions_in_conditions_see_every_number():
    f = findings.check("all under the limit", "ok", "all(x < limit for x in xs)", xs=[1, 2], limit=3)
    assert f.sentence == "ok"


def test_numbers_may_be_called_like_the_parameters():
    f = findings.check("n", "{name} {sentence} {condition} {cases}", "cases == 4", name=1, sentence=2, condition=3, cases=4)
    assert f.sentence == "1 2 3 4"
    assert findings.choose("c", [("True", "{cases}")], cases="x", name="y").sentence == "x"


def test_a_question_as_a_name_gets_no_extra_full_stop():
    f = findings.check("Does it help?", "Yes.", "gain > 0", gain=1)
    assert "**Finding — Does it help?** Yes." in f._repr_markdown_()
    assert "- **Does it help?** Yes." in findings.report(f)._repr_markdown_()


def test_lesson_06_s_old_claim_is_no_winner_and_unpaired_seeds_are_refused():
    # 0.8192 vs 0.8230 with a seed spread of ~0.007 is no winner
    close = findings.compare_at_95("close", {"A": [0.8192, 0.8262, 0.8122], "B": [0.8230, 0.8160, 0.8300]},
                                   metric="RMSE", higher_is_better=False, pairs=[("A", "B")])
    assert "no measurable difference" in close.sentence and "ahead" not in close.sentence
    lower = findings.compare_at_95("lower", {"A": [1.0, 1.1, 1.05], "B": [0.5, 0.52, 0.49]}, metric="RMSE",
                                   higher_is_better=False, pairs=[("A", "B")])
    assert "B ahead of A" in lower.sentence                           # lower wins when lower is better
    with pytest.raises(ValueError, match="same seeds"):
        findings.compare_at_95("unpaired", {"A": [1.0, 2.0, 3.0], "B": [1.0]}, metric="x", pairs=[("A", "B")])
    assert findings.difference([0.9], [0.1]) == (pytest.approx(0.8), math.inf, 1)   # one seed: SE is infinite


def test_a_condition_that_reads_none_of_its_numbers_is_refused():
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.check("vacuous", "x is {x}", "1 < 2", x=1)
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.check("constant", "nothing measured", "True")
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.choose("vacuous first case", [("len([1]) >= 1", "x is {x}"), ("True", "never")], x=1)
    # "True" is only the otherwise-case of choose, after cases that read the numbers
    assert "otherwise" in str(findings.choose("fallback", [("x > 5", "big"), ("True", "otherwise {x}")], x=1))


# ---------------------------------------------------------------- the rule at 95 %


def test_t_critical_values_are_students():
    assert findings.t_critical(3) == pytest.approx(4.3027, abs=1e-4)
    assert findings.t_critical(5) == pytest.approx(2.7764, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2 seeds, got 1"):
        findings.t_critical(1)


def test_a_difference_of_two_and_a_half_standard_errors_over_three_seeds_is_no_winner():
    a, b = [1.0, 1.0, 1.0], [0.8, 0.9, 0.9]          # d = 0.1333, SE = 0.0333: 4.0 SE, under t = 4.30
    d, (low, high), p = findings.seed_test(a, b)
    assert d == pytest.approx(0.4 / 3) and low < 0 < high and 0.05 < p < 0.1
    stated = findings.compare_at_95("t rule", {"A": a, "B": b}, metric="accuracy", pairs=[("A", "B")])
    assert "no measurable difference at this budget" in stated.sentence
    d, se, _ = findings.difference(a, b)
    assert abs(d) > 2 * se                          # a 2-SE rule (about 80 % with 3 seeds) named a winner here
    clear = findings.compare_at_95("clear", {"A": [1.0, 1.1, 1.2], "B": [0.5, 0.62, 0.69]}, metric="accuracy",
                                   pairs=[("A", "B")])
    assert "A ahead of B by 0.4967" in clear.sentence and "95 % CI of the difference over 3 seeds" in clear.sentence


def test_a_difference_the_test_units_do_not_support_is_no_winner():
    """Seeds agree exactly (a fixed test set, deterministic scoring), but the gap rests on a handful
    of 200 users: the bootstrap over users refuses it; a gap spread over every user passes."""
    rng = np.random.default_rng(0)
    base = rng.random((3, 200)) < 0.3
    lucky = base.copy()
    lucky[:, :3] = True                                    # three more hits among 200 users
    noisy = findings.compare_at_95("users", {"A": lucky.mean(1), "B": base.mean(1)}, metric="HR@10", pairs=[("A", "B")],
                                   units={"A": lucky, "B": base}, unit_name="test users")
    assert "no measurable difference" in noisy.sentence and "over 200 test users" in noisy.sentence
    better = base | (rng.random((3, 200)) < 0.4)
    clear = findings.compare_at_95("users", {"A": better.mean(1), "B": base.mean(1)}, metric="HR@10",
                                   pairs=[("A", "B")], units={"A": better, "B": base}, unit_name="test users")
    assert "A ahead of B" in clear.sentence


def test_the_rmse_bootstrap_takes_the_root_of_each_resampled_mean():
    errors_a, errors_b = np.full((2, 50), 0.81), np.full((2, 50), 1.0)   # RMSE 0.9 vs 1.0 on every draw
    (low, high), p, n = findings.unit_bootstrap(errors_a, errors_b, "rmse", resamples=200)
    # the same as (sum, count) per user: 50 users with 1 to 3 ratings each
    counts = np.arange(50) % 3 + 1
    per_user_a = np.stack([np.column_stack([0.81 * counts, counts])] * 2)
    per_user_b = np.stack([np.column_stack([1.0 * counts, counts])] * 2)
    assert findings.unit_bootstrap(per_user_a, per_user_b, "rmse", resamples=200)[0] == pytest.approx((-0.1, -0.1))
    with pytest.raises(ValueError, match=r"\(U, 2\) \(sum, count\) pairs, got shape \(50, 3\)"):
        findings.unit_bootstrap([np.ones((50, 3))], [np.ones((50, 3))])
    assert low == pytest.approx(-0.1) and high == pytest.approx(-0.1) and p == pytest.approx(2 / 201) and n == 50
    per_seed = findings.unit_bootstrap([errors_a[0], errors_a[1, :30]], [errors_b[0], errors_b[1, :30]], "rmse",
                                       resamples=200)
    assert per_seed[0] == pytest.approx((-0.1, -0.1)) and per_seed[2] == 40   # each seed its own units: 50, 30
    with pytest.raises(ValueError, match="statistic must be one of"):
        findings.unit_bootstrap(errors_a, errors_b, "median")
    with pytest.raises(ValueError, match="same \\(seeds, units\\)"):
        findings.unit_bootstrap(errors_a, errors_b[:, :10])
    with pytest.raises(ValueError, match="same \\(seeds, units\\)"):
        findings.unit_bootstrap([errors_a[0], errors_a[1]], [errors_b[0], errors_b[1, :10]])


def test_holm_adjusts_in_step_down_order_and_can_withdraw_a_winner():
    assert findings.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert findings.holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    # each pair alone is named (p ≈ 0.037 and 0.027); together, Holm multiplies the smaller by 2
    base = [0.5, 0.6, 0.7, 0.8, 0.9]
    results = {"A": base, "B": [b + d for b, d in zip(base, [0.1, 0.02, 0.1, 0.15, 0.02])],
               "C": base, "D": [b + d for b, d in zip(base, [0.1, 0.03, 0.1, 0.14, 0.02])]}
    for pair in (("B", "A"), ("D", "C")):
        assert f"{pair[0]} ahead of {pair[1]}" in findings.compare_at_95("alone", results, metric="m", pairs=[pair]).sentence
    together = findings.compare_at_95("together", results, metric="m", pairs=[("B", "A"), ("D", "C")])
    assert together.sentence.count("no measurable difference") == 2 and together.sentence.count("after Holm") == 2
    assert "Holm's correction over the 2 pairs" in together.sentence


def test_the_rule_needs_pairs_fixed_in_advance_and_known_methods():
    with pytest.raises(ValueError, match="name the pairs"):
        findings.compare_at_95("x", {"A": [1, 2, 3], "B": [1, 2, 3]}, metric="m", pairs=None)
    with pytest.raises(ValueError, match=r"no results for \['C'\]"):
        findings.compare_at_95("x", {"A": [1, 2, 3], "B": [1, 2, 3]}, metric="m", pairs=[("A", "C")])


def test_the_rule_s_condition_fails_when_a_rerun_would_flip_the_clause():
    stated = findings.compare_at_95("flip", {"A": [1.0, 1.1, 1.2], "B": [0.5, 0.62, 0.69]}, metric="m", pairs=[("A", "B")])
    assert stated.condition == "q0 <= alpha"
    assert not findings.holds(stated.condition, {**stated.numbers, "q0": 0.2})


def test_shared_units_are_drawn_once_for_all_seeds():
    """When every seed is scored on the same users, a user who lifts method A in every seed moves
    every seed's difference together; drawing the users once for all seeds keeps that, drawing
    them per seed would average it away and understate the test set's noise."""
    rng = np.random.default_rng(1)
    gain = rng.normal(0, 1, 100)                                  # each user's own (shared) advantage
    a = np.stack([gain + rng.normal(0, 0.1, 100) for _ in range(5)])
    b = np.zeros((5, 100))
    shared = findings.unit_bootstrap(a, b)[0]
    separate = findings.unit_bootstrap(list(a), list(b))[0]
    assert shared[1] - shared[0] > 1.8 * (separate[1] - separate[0])


def test_decide_pairs_names_the_winner_in_the_metric_s_direction():
    results = {"A": [0.80, 0.81, 0.82, 0.80, 0.81], "B": [0.90, 0.92, 0.91, 0.90, 0.93]}
    lower, = findings.decide_pairs(results, [("A", "B")], higher_is_better=False)
    higher, = findings.decide_pairs(results, [("A", "B")], higher_is_better=True)
    assert lower.winner == "A" and higher.winner == "B" and lower.p == higher.p < 0.05
    assert lower.difference == pytest.approx(-0.104) and lower.seeds == 5 and lower.unit_interval is None
    with pytest.raises(ValueError, match="name the pairs"):
        findings.decide_pairs(results, [])


def test_an_unpaired_bootstrap_compares_different_test_sets():
    """Two β have different cold users: each method's users are drawn on their own, and the noise
    of both test sets widens the interval."""
    rng = np.random.default_rng(2)
    small = [rng.normal(1.0, 0.5, 40) for _ in range(3)]
    large = [rng.normal(1.1, 0.5, 400) for _ in range(3)]
    (low, high), p, n = findings.unit_bootstrap(small, large, paired=False)
    assert low < -0.1 < high and n == (40, 400)                             # each method's units per seed
    with pytest.raises(ValueError, match="paired bootstrap needs"):
        findings.unit_bootstrap(small, large)
    stated = findings.compare_at_95("β", {"A": [s.mean() for s in small], "B": [s.mean() for s in large]}, metric="m",
                                    pairs=[("A", "B")], units={"A": small, "B": large}, paired_units=False)
    assert "and a bootstrap over the test units" in stated.sentence
    assert "over 40 and 400 test units" in stated.sentence                 # each test set's own size, not their mean


def test_close_at_95_shows_closeness_only_when_every_interval_lies_inside_the_band():
    rng = np.random.default_rng(0)
    units_b = rng.normal(1.0, 0.1, size=(3, 400))
    units_a = units_b + 0.001 + rng.normal(0, 0.0005, size=(3, 400))   # 0.1 % worse, tightly paired
    results = {"A": list(units_a.mean(axis=1)), "B": list(units_b.mean(axis=1))}
    close = findings.close_at_95("close", results, a="A", b="B", tolerance=0.01, metric="m",
                                 units={"A": units_a, "B": units_b}, unit_name="users")
    assert "A is within ±1% of B" in close.sentence and "400 users" in close.sentence
    assert "high <= tolerance" in close.condition and close.numbers["high"] < 0.01
    # the same means from one seed: the spread over seeds is unknown, so closeness is not shown
    one = findings.close_at_95("one seed", {"A": results["A"][:1], "B": results["B"][:1]}, a="A", b="B",
                               tolerance=0.01, metric="m")
    assert "cannot be shown within ±1%" in one.sentence and "unknown (one seed)" in one.sentence
    # tight seeds but a test set too small and noisy to bound the gap: not shown either
    noisy_b = rng.normal(1.0, 0.5, size=(3, 20))
    noisy_a = noisy_b + rng.normal(0.0, 0.3, size=(3, 20))
    seeds_only = {"A": [1.0, 1.0001, 1.0002], "B": [1.0, 1.0, 1.0001]}
    wide = findings.close_at_95("wide", seeds_only, a="A", b="B", tolerance=0.01, metric="m",
                                units={"A": noisy_a, "B": noisy_b})
    assert "cannot be shown" in wide.sentence and max(-wide.numbers["low"], wide.numbers["high"]) > 0.01
    with pytest.raises(FindingError):   # a rerun whose intervals left the band would fail, not flip silently
        findings.check("flip", "x", close.condition, **{**close.numbers, "high": 0.02})
    with pytest.raises(ValueError, match="tolerance"):
        findings.close_at_95("bad", results, a="A", b="B", tolerance=1.5, metric="m")
    with pytest.raises(ValueError, match="no results"):
        findings.close_at_95("bad", results, a="A", b="C", tolerance=0.01, metric="m")


def test_one_seed_names_no_winner_and_says_its_spread_is_unknown():
    single = findings.compare_at_95("one", {"A": [1.0], "B": [0.5]}, metric="m", pairs=[("A", "B")])
    assert "no measurable difference" in single.sentence and "over 1 seed unknown (one seed)" in single.sentence
    assert "inf" not in single.sentence
