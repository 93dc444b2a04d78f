"""What the committed notebooks say and show.

1. Markdown explains; it does not quote measured results. Measured results are stated by
   ``helpers.findings`` in outputs, where a changed number fails the run instead of
   leaving a false sentence behind.
2. Committed outputs are clean: no TensorFlow/absl start-up lines, CUDA probes, library
   warnings, stderr, machine paths, ANSI codes or progress bars frozen in a static viewer.
3. Run times in the notebooks and the README are the measured ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from helpers import runtimes

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))

# --- 1. measured results in prose -------------------------------------------------------------

MEASURED_RESULT_PATTERNS = {
    "a ratio such as '70×'": re.compile(r"\d\s*×(?!\s*\d)"),
    "a signed change such as '+0.3%'": re.compile(r"[+−-]\s?\d+(?:\.\d+)?\s*%"),
    "a bounded share such as 'within 1%'": re.compile(
        r"\b(?:within|by|about|nearly|almost|roughly|over|under|only)\s+~?\d+(?:\.\d+)?\s*%", re.IGNORECASE),
    "a measured value such as '0.87'": re.compile(r"(?<![=≤≥<>/\w.])(?<![=≤≥<>]\s)\d\.\d{2,}\b"),
    "a ranking such as 'scratch wins'": re.compile(
        r"\b(?:wins?|won|beats?|outperforms?|loses to|lost to|ahead of|trails?|overtakes?|catches up|"
        r"does best|did best|better than|worse than|faster than|slower than|cheaper than|in fewer rounds)\b",
        re.IGNORECASE),
}

# Numbers that are facts of the set-up or of a formula, not measurements: (notebook, exact text).
ALLOWED = {
    ("01_softmax_scoring.ipynb", "counts 0.29"),            # 1/log2(11), the NDCG weight of rank 10
}


def strip_code_and_math(markdown: str) -> str:
    """Formulas and code are not prose: drop ``$…$``, ``$$…$$`` and backticked spans."""
    markdown = re.sub(r"\$\$.*?\$\$", " ", markdown, flags=re.DOTALL)
    markdown = re.sub(r"\$[^$\n]+\$", " ", markdown)
    markdown = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    return re.sub(r"`[^`\n]+`", " ", markdown)


def measured_results(markdown: str, allowed: set[str] = frozenset()) -> list[str]:
    """Every phrase of ``markdown`` that reads like a measured result, with the pattern it matched."""
    text = strip_code_and_math(markdown)
    for phrase in allowed:
        text = text.replace(phrase, " ")
    hits = []
    for what, pattern in MEASURED_RESULT_PATTERNS.items():
        for match in pattern.finditer(text):
            start, end = max(0, match.start() - 30), min(len(text), match.end() + 30)
            hits.append(f"{what}: …{text[start:end].strip()}…")
    return hits


@pytest.mark.parametrize("sentence", [
    "Sending only the rows a client rated is about 70× cheaper than the whole table.",
    "Scratch wins from 50 labels on.",
    "FedAvg ends within 1% of centralised training.",
    "The best model gains +0.3% over the baseline.",
    "Biased MF reaches a test RMSE of about 0.87 stars.",
    "Transfer beats training from scratch at 10 labels per class.",
    "FedAvg gets there in fewer rounds than FedSGD.",
])
def test_the_rule_catches_measured_results(sentence):
    assert measured_results(sentence), sentence


@pytest.mark.parametrize("sentence", [
    "A random 80/20 split; β ∈ {20%, 50%, 80%} of the overlapping users are cold.",
    "Three blocks of 3×3 convolutions on 32×32 images; the rate is $\\eta = 0.05$.",
    "The update is `assign_sub(0.01 * g)`, and the server uses η_s = 10.",
    "MovieLens latest-small has 100,836 ratings by 610 users.",
])
def test_the_rule_leaves_set_up_facts_and_formulas_alone(sentence):
    assert measured_results(sentence) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_markdown_states_no_measured_result(path):
    notebook = nbformat.read(path, as_version=4)
    allowed = {text for name, text in ALLOWED if name == path.name}
    problems = [f"cell {i}: {hit}" for i, cell in enumerate(notebook.cells) if cell.cell_type == "markdown"
                for hit in measured_results(cell.source, allowed)]
    assert not problems, (f"{path.name}: markdown quotes measured results; state them with helpers.findings "
                          "in an output instead:\n" + "\n".join(problems))


def test_readme_lesson_table_states_no_measured_result():
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| [`")]
    assert rows
    problems = [hit for row in rows for hit in measured_results(row.rsplit("|", 2)[0])]
    assert not problems, "README lesson table quotes measured results:\n" + "\n".join(problems)


# --- 2. clean committed outputs ---------------------------------------------------------------

UNCLEAN_OUTPUT = {
    "a TensorFlow/absl start-up line": re.compile(r"^[IWEF]0000 |WARNING: All log messages before absl|oneDNN custom",
                                                  re.MULTILINE),
    "a CUDA probe": re.compile(r"cuInit|cuda drivers|CUDA error", re.IGNORECASE),
    "a library warning": re.compile(r"WARNING:absl|\w+Warning:|warnings\.warn"),
    "a path of the machine that ran it": re.compile(
        r"file:///|/work/|/home/\w|/root/|/Users/\w|/tmp/|site-packages|[A-Z]:\\\\"),
    "terminal colour codes": re.compile(r"\x1b\["),
    "a progress bar": re.compile(r"\d+%\|[^\n]*\||━━"),
}


def output_texts(output) -> list[str]:
    if output.output_type == "stream":
        return [output.text]
    if output.output_type in ("display_data", "execute_result"):
        return [value if isinstance(value, str) else "" for key, value in output.data.items() if key.startswith("text/")]
    if output.output_type == "error":
        return ["\n".join(output.traceback)]
    return []


def unclean(notebook) -> list[str]:
    """Every problem in the outputs of ``notebook``, one line each."""
    problems = []
    for i, cell in enumerate(notebook.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stderr":
                problems.append(f"cell {i}: output on stderr: {output.text.strip()[:80]!r}")
            if output.output_type == "error":
                problems.append(f"cell {i}: an error")
            for text in output_texts(output):
                for what, pattern in UNCLEAN_OUTPUT.items():
                    match = pattern.search(text)
                    if match:
                        problems.append(f"cell {i}: {what}: {text[max(0, match.start() - 40):match.end() + 40]!r}")
    return problems


def test_the_output_check_catches_each_kind_of_noise():
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="I0000 00:00:1 port.cc:153] oneDNN custom operations"),
        nbformat.v4.new_output("stream", name="stdout", text="Downloading data from file:///work/shared/x.zip"),
        nbformat.v4.new_output("display_data", data={"text/plain": "rounds:   0%|          | 0/300 [00:00<?, ?it/s]"}),
        nbformat.v4.new_output("stream", name="stdout", text="/x/keras/nn.py:1402: UserWarning: from_logits"),
    ]
    notebook.cells = [cell]
    found = "\n".join(unclean(notebook))
    for what in ("stderr", "start-up", "path", "progress bar", "library warning"):
        assert what in found, what
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="rounds: 300 in 7.5 s\n")]
    assert unclean(notebook) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_outputs_are_clean(path):
    problems = unclean(nbformat.read(path, as_version=4))
    assert not problems, f"{path.name}:\n" + "\n".join(problems)


# --- 3. measured run times ---------------------------------------------------------------------

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_run_times_are_measured_and_agree(path):
    times = runtimes.load_times()
    assert path.name in times["notebooks"], f"measure it: python -m helpers.runtimes execute notebooks/{path.name}"
    entry = times["notebooks"][path.name]
    assert "fast" in entry, f"{path.name}: measure its fast run (python -m helpers.runtimes execute --fast …)"
    assert "full" in entry or "The committed outputs come from a `COURSE_FAST=1` run" in runtimes.run_time_line(path.name, times)
    opening = nbformat.read(path, as_version=4).cells[0].source
    assert runtimes.run_time_line(path.name, times) in opening, (
        f"{path.name}: its run-time line differs from helpers/run_times.json; run python -m helpers.runtimes write")
    for readme in runtimes.READMES:
        assert f"| {runtimes.readme_cell(path.name, times)} |" in (ROOT / readme).read_text(), (
            f"{readme}: the run time of {path.name} differs from helpers/run_times.json; run python -m helpers.runtimes write")


# --- 4. every recap line was shown where it was measured ----------------------------------------

def plain_outputs(cell) -> str:
    """What a code cell showed, as plain text: streams and every text/plain result."""
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        parts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def unshown_recap_lines(notebook) -> list[str]:
    """Recap lines ("- Name. sentence") of ``findings.recap()`` that no earlier output showed."""
    missing, shown = [], []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if "findings.recap()" in cell.source:
            earlier = "\n".join(shown)
            for line in plain_outputs(cell).splitlines():
                if line.startswith("- ") and line[2:].strip() not in earlier:
                    missing.append(line[2:].strip()[:120])
        shown.append(plain_outputs(cell))
    return missing


def test_the_recap_check_catches_a_finding_shown_only_in_the_recap():
    shown = nbformat.v4.new_code_cell("findings.check(...)", outputs=[nbformat.v4.new_output(
        "execute_result", {"text/plain": "Finding — Shown. It was shown. [checked: x > 0 with x = 1]"}, execution_count=1)])
    hidden = nbformat.v4.new_code_cell("findings.check(...);")   # a trailing ; hides the finding
    recap = nbformat.v4.new_code_cell("findings.recap()", outputs=[nbformat.v4.new_output(
        "execute_result", {"text/plain": "- Shown. It was shown.\n- Hidden. It was not."}, execution_count=3)])
    notebook = nbformat.v4.new_notebook(cells=[shown, hidden, recap])
    assert unshown_recap_lines(notebook) == ["Hidden. It was not."]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_recap_line_was_shown_where_it_was_measured(path):
    missing = unshown_recap_lines(nbformat.read(path, as_version=4))
    assert not missing, f"{path.name}: findings shown only in the recap (show them where measured):\n" + "\n".join(missing)
