"""helpers.progress (one summary line left behind) and helpers.runtimes (measured run times in words)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from helpers import progress, runtimes


def test_progress_yields_every_item_and_can_be_silent(capsys):
    assert list(progress.progress(range(5), "rounds")) == [0, 1, 2, 3, 4]
    assert list(progress.progress(iter([1, 2]), "items", enabled=False)) == [1, 2]
    assert capsys.readouterr().out == ""


def test_summary_line_reads_as_one_line():
    assert progress.summary_line("rounds", 300, 7.46) == "rounds: 300 in 7.5 s"
    assert progress.summary_line("target runs", 60, 600) == "target runs: 60 in 10.0 min"


@pytest.mark.parametrize("seconds, words, short", [(20, "under 1 minute", "<1 min"), (65, "about 1 minute", "~1 min"),
                                                    (150, "about 2 minutes", "~2 min"), (731, "about 12 minutes", "~12 min")])
def test_minutes_phrases(seconds, words, short):
    assert runtimes.minutes_phrase(seconds) == words
    assert runtimes.short_phrase(seconds) == short


def test_negative_time_is_refused():
    with pytest.raises(ValueError):
        runtimes.minutes_phrase(-1)


def test_write_texts_renders_notebook_line_and_readme_cell(tmp_path: Path):
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# L\n\n**Expected run time.** About 99 minutes.\n\nMore.")]
    nbformat.write(notebook, tmp_path / "notebooks" / "01_x.ipynb")
    (tmp_path / "README.md").write_text("| notebook | t |\n|---|---|\n| [`01_x.ipynb`](notebooks/01_x.ipynb) | old |\n")
    times = {"machine": "test", "notebooks": {"01_x.ipynb": {"full": 250.0, "fast": 40.0}}}
    assert runtimes.write_texts(tmp_path, times) == ["01_x.ipynb", "README.md"]
    opening = nbformat.read(tmp_path / "notebooks" / "01_x.ipynb", as_version=4).cells[0].source
    assert runtimes.run_time_line("01_x.ipynb", times) in opening and opening.endswith("More.")
    assert "About 4 minutes" in opening and "under 1 minute with `COURSE_FAST=1`" in opening
    assert "| ~4 min (<1 min fast) |" in (tmp_path / "README.md").read_text()
    assert runtimes.write_texts(tmp_path, times) == []  # idempotent


def test_record_keeps_both_modes(tmp_path: Path):
    path = tmp_path / "times.json"
    runtimes.record("01_x.ipynb", "full", 100.04, path)
    runtimes.record("01_x.ipynb", "fast", 30.0, path)
    assert json.loads(path.read_text())["notebooks"]["01_x.ipynb"] == {"full": 100.0, "fast": 30.0}
    with pytest.raises(ValueError):
        runtimes.record("01_x.ipynb", "slow", 1.0, path)


def test_a_lesson_committed_from_a_fast_run_says_so_and_claims_no_full_time():
    times = {"machine": "test", "notebooks": {"04_x.ipynb": {"fast": 442.0}}}
    line = runtimes.run_time_line("04_x.ipynb", times)
    assert "About 7 minutes with `COURSE_FAST=1`" in line and "committed outputs come from a `COURSE_FAST=1` run" in line
    assert runtimes.readme_cell("04_x.ipynb", times) == "~7 min fast (committed from a fast run; full not timed yet)"


def test_forget_full(tmp_path: Path):
    path = tmp_path / "times.json"
    runtimes.record("04_x.ipynb", "full", 900.0, path)
    runtimes.record("04_x.ipynb", "fast", 400.0, path)
    runtimes.forget_full("04_x.ipynb", path)
    assert json.loads(path.read_text())["notebooks"]["04_x.ipynb"] == {"fast": 400.0}


def test_a_stuck_notebook_is_stopped_at_its_deadline_with_the_kernels_stack(tmp_path):
    """``runtimes.execute`` names each cell as it starts; a cell still running at the notebook's
    deadline ends the run: the kernel's Python stack is printed in the error and the kernel killed."""
    import io
    import time

    import psutil

    path = tmp_path / "stuck.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("import time\ndef wait_forever():\n    time.sleep(600)\nwait_forever()"),
        nbformat.v4.new_code_cell("y = 2")]), path)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    log, start = io.StringIO(), time.monotonic()
    with pytest.raises(runtimes.NotebookTimeout, match=r"cell 1 \('import time'\) was still running at the notebook's "
                                                       r"deadline of 8 s") as stopped:
        runtimes.execute(path, fast=True, deadline=8, log=log)
    assert time.monotonic() - start < 60
    assert "in wait_forever" in str(stopped.value), str(stopped.value)   # the stuck cell's own frame
    assert "cell 0: x = 1" in log.getvalue() and "cell 1: import time" in log.getvalue()
    assert "cell 2" not in log.getvalue()
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.status() != "zombie"]
    assert not left, f"processes left running: {left}"


def test_the_deadline_follows_the_recorded_run_time():
    times = {"notebooks": {"03_x.ipynb": {"full": 100.0, "fast": 20.0}}}
    assert runtimes.deadline_for("03_x.ipynb", fast=False, times=times) == 600
    assert runtimes.deadline_for("03_x.ipynb", fast=True, times=times) == 360
    assert runtimes.deadline_for("99_new.ipynb", fast=True, times=times) == runtimes.UNTIMED_DEADLINE_SECONDS


class _Channel:
    """A channel whose message arrives on the n-th ask; records each ask's timeout."""

    def __init__(self, ready_on: int | None):
        self.ready_on, self.asks = ready_on, []

    async def get_msg(self, timeout=None):
        from queue import Empty
        import asyncio

        self.asks.append(timeout)
        if self.ready_on is not None and len(self.asks) >= self.ready_on:
            return {"msg": "reply"}
        await asyncio.sleep(timeout or 0)
        raise Empty


def test_a_wait_for_a_reply_asks_again_every_slice_until_the_reply_or_the_timeout():
    import asyncio
    from queue import Empty

    channel = _Channel(ready_on=3)
    runtimes.poll_in_slices(channel, slice_seconds=0.01)
    assert asyncio.run(channel.get_msg(timeout=None)) == {"msg": "reply"}
    assert channel.asks[:3] == [0.01, 0.01, 0.01]           # waiting forever, one slice at a time
    never = _Channel(ready_on=None)
    runtimes.poll_in_slices(never, slice_seconds=0.01)
    with pytest.raises(Empty):
        asyncio.run(never.get_msg(timeout=0.05))
    assert len(never.asks) >= 2 and all(t <= 0.01 for t in never.asks)  # and gives up at the timeout
