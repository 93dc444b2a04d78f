"""helpers.findings: a finding is shown only when its condition holds; otherwise the cell fails."""

from __future__ import annotations

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


def test_compare_names_a_winner_only_beyond_the_seed_spread():
    clear = findings.compare("clear", {"A": [0.80, 0.81, 0.79], "B": [0.70, 0.72, 0.69]}, metric="accuracy")
    assert "A ahead of B by 0.0967" in clear.sentence and "3 seeds" in clear.sentence
    # lesson 06's old claim: 0.8192 vs 0.8230 with a seed spread of ~0.007 is no winner
    close = findings.compare("close", {"A": [0.8192, 0.8262, 0.8122], "B": [0.8230, 0.8160, 0.8300]},
                             metric="RMSE", higher_is_better=False)
    assert "no measurable difference" in close.sentence and "ahead" not in close.sentence
    few = findings.compare("few", {"A": [0.9, 0.91], "B": [0.1, 0.11]}, metric="HR@10")
    assert "no measurable difference" in few.sentence  # two seeds never name a winner


def test_the_noise_rule_needs_three_seeds_and_a_margin_beyond_two_standard_errors():
    assert findings.measurable(0.05, 0.02, 3) and findings.measurable(-0.05, 0.02, 3)   # either direction
    assert not findings.measurable(0.04, 0.02, 3)                                       # exactly 2 SE: not beyond
    assert not findings.measurable(0.05, 0.0, 2)                                        # too few seeds
    assert not findings.measurable(*findings.difference([0.9], [0.1]))                  # one seed: SE is infinite


def test_compare_picks_the_direction_and_every_pair():
    lower = findings.compare("lower", {"A": [1.0, 1.1, 1.05], "B": [0.5, 0.52, 0.49], "C": [0.51, 0.5, 0.5]},
                             metric="RMSE", higher_is_better=False)
    assert "B ahead of A" in lower.sentence and "B vs C: no measurable difference" in lower.sentence
    with pytest.raises(ValueError, match="same seeds"):
        findings.compare("unpaired", {"A": [1.0, 2.0, 3.0], "B": [1.0]}, metric="x")
    with pytest.raises(ValueError, match="two methods"):
        findings.compare("alone", {"A": [1.0]}, metric="x")


def test_compare_s_condition_depends_on_its_numbers():
    f = findings.compare("c", {"A": [0.8, 0.81, 0.79], "B": [0.7, 0.72, 0.69]}, metric="m")
    assert findings.holds(f.condition, f.numbers)
    assert not findings.holds(f.condition, {**f.numbers, "se0": 1.0})  # a wider spread would refute the claim


def test_a_condition_that_reads_none_of_its_numbers_is_refused():
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.check("vacuous", "x is {x}", "1 < 2", x=1)
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.check("constant", "nothing measured", "True")
    with pytest.raises(ValueError, match="reads none of its numbers"):
        findings.choose("vacuous first case", [("len([1]) >= 1", "x is {x}"), ("True", "never")], x=1)
    # "True" is only the otherwise-case of choose, after cases that read the numbers
    assert "otherwise" in str(findings.choose("fallback", [("x > 5", "big"), ("True", "otherwise {x}")], x=1))
