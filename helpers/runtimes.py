"""Measured run times of the lessons, and the one place their wording comes from.

Each notebook's "Expected run time" line and the README's lesson table are rendered
from ``helpers/run_times.json``, which holds the seconds of real executions (full and
``COURSE_FAST=1``) on the machine named in the file. A test checks that notebooks,
README and the file agree.

Command line (run from the project root, with the data reachable)::

    python -m helpers.runtimes execute notebooks/03_federated_rounds.ipynb   # full run, outputs saved
    (each cell is named as it starts; a run past its deadline — 3 × its recorded time + 5 min —
    is stopped with the kernel's stack printed: ``--deadline SECONDS`` sets another)
    python -m helpers.runtimes execute --fast notebooks/03_federated_rounds.ipynb   # timed only
    python -m helpers.runtimes write     # update the notebooks' opening lines and the README table
    python -m helpers.runtimes calibrate # the reference for 00_start_here's predictions (same machine)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

TIMES_FILE = Path(__file__).with_name("run_times.json")
RUN_TIME_LINE = re.compile(r"^\*\*Expected run time\.\*\*.*$", re.MULTILINE)
MODES = ("full", "fast")
READMES = ("README.md", "README.zh-CN.md", "TEACHING.md")  # lesson tables whose last column is the run time


def load_times(path: Path = TIMES_FILE) -> dict:
    """``{"machine": str, "calibration_seconds": s, "notebooks": {name: {"full": seconds, "fast": seconds}}}``."""
    if not path.exists():
        return {"machine": "", "notebooks": {}}
    return json.loads(path.read_text())


def save_times(times: dict, path: Path = TIMES_FILE) -> None:
    """Write ``times`` back to ``run_times.json`` (indented, one trailing newline)."""
    path.write_text(json.dumps(times, indent=2) + "\n")


def minutes_phrase(seconds: float) -> str:
    """Seconds → the words a learner reads: ``"under 1 minute"``, ``"about 4 minutes"``."""
    if seconds < 0:
        raise ValueError(f"a run time cannot be negative, got {seconds}")
    minutes = seconds / 60
    if minutes < 1:
        return "under 1 minute"
    whole = max(1, round(minutes))
    return f"about {whole} minute" + ("s" if whole > 1 else "")


def short_phrase(seconds: float) -> str:
    """Seconds → the README's short form: ``"<1 min"``, ``"~4 min"``."""
    phrase = minutes_phrase(seconds)
    return "<1 min" if phrase.startswith("under") else "~" + phrase.split()[1] + " min"


def run_time_line(name: str, times: dict | None = None) -> str:
    """The opening cell's line for notebook ``name`` (for example ``"03_federated_rounds.ipynb"``)."""
    entry = (times or load_times())["notebooks"][name]
    fast = minutes_phrase(entry["fast"])
    if "full" not in entry:  # committed from a fast run: say so, and claim no full-run time
        return (f"**Expected run time.** {fast[0].upper() + fast[1:]} with `COURSE_FAST=1` on a 2-core laptop CPU "
                f"(measured; see `helpers/run_times.json`); the full run has not been timed on that machine yet. "
                f"**The committed outputs come from a `COURSE_FAST=1` run.**")
    full = minutes_phrase(entry["full"])
    return (f"**Expected run time.** {full[0].upper() + full[1:]} on a 2-core laptop CPU; "
            f"{fast} with `COURSE_FAST=1` (both measured; see `helpers/run_times.json`).")


def readme_cell(name: str, times: dict | None = None) -> str:
    """The README table's run-time cell for notebook ``name``, e.g. ``"~12 min (~4 min fast)"``."""
    entry = (times or load_times())["notebooks"][name]
    if "full" not in entry:
        return f"{short_phrase(entry['fast'])} fast (committed from a fast run; full not timed yet)"
    return f"{short_phrase(entry['full'])} ({short_phrase(entry['fast'])} fast)"


class NotebookTimeout(TimeoutError):
    """A notebook run passed its deadline; the message holds the cell and the kernel's stack."""


UNTIMED_DEADLINE_SECONDS = 1800.0  # the deadline of a notebook with no recorded run time for the mode
# run in the kernel at start-up: SIGUSR1 makes it write every thread's Python stack to a file
_STACK_ON_SIGNAL = ("import faulthandler, signal; "
                    "faulthandler.register(signal.SIGUSR1, file=open({path!r}, 'w'), all_threads=True)")


def deadline_for(name: str, fast: bool, times: dict | None = None) -> float:
    """Seconds a whole run of notebook ``name`` may take: three times its recorded run time for
    the mode plus 5 minutes (a loaded machine is not a stuck one), else :data:`UNTIMED_DEADLINE_SECONDS`."""
    recorded = (times or load_times())["notebooks"].get(name, {}).get("fast" if fast else "full")
    return UNTIMED_DEADLINE_SECONDS if recorded is None else 3 * recorded + 300


POLL_SLICE_SECONDS = 1.0


def poll_in_slices(channel, slice_seconds: float = POLL_SLICE_SECONDS) -> None:
    """Make ``channel.get_msg(timeout=T)`` wait in slices of ``slice_seconds``, asking again after each,
    until a message comes or T has passed (then ``queue.Empty``, as before; T = None waits forever).

    nbclient waits for a cell's reply with one ``get_msg`` on the shell channel (and for its output on
    the IOPub channel); after a cell that shows widgets that wait sometimes never wakes although the
    reply has arrived and the kernel is idle (jupyter/nbclient#312), and a notebook run then sits until
    its deadline. Asking again each second picks the reply up.
    """
    from queue import Empty

    from jupyter_core.utils import ensure_async

    original = channel.get_msg

    async def get_msg(timeout: float | None = None, **kwargs):
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = slice_seconds if end is None else max(0.0, min(slice_seconds, end - time.monotonic()))
            try:
                return await ensure_async(original(timeout=wait, **kwargs))
            except Empty:
                if end is not None and time.monotonic() >= end:
                    raise

    channel.get_msg = get_msg


def _stop_with_stack(client, dump: Path) -> str:
    """Ask the kernel of ``client`` for its threads' stacks (SIGUSR1 → ``dump``), kill it; the stacks."""
    import signal

    pid = client.km.provisioner.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        for _ in range(50):  # the stack is written within a moment unless the kernel is stuck in C code
            time.sleep(0.1)
            if dump.exists() and dump.stat().st_size:
                break
        os.kill(pid, signal.SIGKILL)
    threads = dump.read_text(errors="replace").strip().split("\n\n") if dump.exists() else []
    threads.sort(key=lambda thread: not thread.startswith("Current thread"))  # the cell's thread first
    return "\n\n".join(threads) or "(the kernel wrote no stack: stuck outside Python)"


def run_notebook(notebook, folder: Path, fast: bool, timeout: int = 1200, deadline: float = UNTIMED_DEADLINE_SECONDS,
                 log=None, name: str = "notebook") -> float:
    """Run every code cell of an in-memory ``notebook`` (nbformat) in a fresh kernel started in
    ``folder``, with ``COURSE_FAST`` set from ``fast``; the outputs go into ``notebook``; return the
    wall seconds.

    Each cell is named on ``log`` (default stderr) as it starts, with the seconds so far. A cell may
    run ``timeout`` s, the whole notebook ``deadline`` s; past either, the kernel's Python stack is
    taken, the kernel killed and :class:`NotebookTimeout` raised with both (``name`` says which
    notebook). Raises ``nbclient.exceptions.CellExecutionError`` when a cell fails (a finding included).
    """
    import tempfile

    import nbclient
    from nbclient.exceptions import CellTimeoutError

    log = log or sys.stderr
    previous = os.environ.get("COURSE_FAST")
    os.environ["COURSE_FAST"] = "1" if fast else "0"  # the kernel inherits this process's environment
    with tempfile.TemporaryDirectory(prefix="course-run-") as scratch:
        dump = Path(scratch) / "kernel-stack.txt"
        try:
            client = nbclient.NotebookClient(
                notebook, timeout=timeout, kernel_name="python3", record_timing=False,
                resources={"metadata": {"path": str(folder)}},
                extra_arguments=[f"--IPKernelApp.exec_lines={_STACK_ON_SIGNAL.format(path=str(dump))}"])
            client.reset_execution_trackers()
            start = time.perf_counter()
            with client.setup_kernel():
                poll_in_slices(client.kc.shell_channel)
                poll_in_slices(client.kc.iopub_channel)
                for index, cell in enumerate(notebook.cells):
                    if cell.cell_type != "code":
                        continue
                    elapsed = time.perf_counter() - start
                    left = deadline - elapsed
                    first_line = next((line for line in cell.source.splitlines() if line.strip()), "")
                    print(f"{elapsed:6.0f} s  cell {index}: {first_line[:70]}", file=log, flush=True)
                    client.timeout = max(1, int(min(timeout, left)))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        stack = _stop_with_stack(client, dump)
                        which = (f"the notebook's deadline of {deadline:.0f} s" if left < timeout
                                 else f"the cell timeout of {timeout} s")
                        raise NotebookTimeout(f"{name}: cell {index} ({first_line[:70]!r}) was still running at "
                                              f"{which}; the kernel was stopped. Its stack:\n{stack}") from None
            return time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop("COURSE_FAST", None)
            else:
                os.environ["COURSE_FAST"] = previous


def execute(path: Path, fast: bool, timeout: int = 1200, save: bool | None = None, deadline: float | None = None,
            log=None) -> float:
    """Run the notebook at ``path`` with :func:`run_notebook` (deadline: :func:`deadline_for` unless
    given); return the wall seconds. A full run saves the outputs into the notebook; a fast run
    (``COURSE_FAST=1``) only times it, unless ``save`` says otherwise.
    """
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    deadline = deadline_for(path.name, fast) if deadline is None else deadline
    seconds = run_notebook(notebook, path.parent, fast, timeout, deadline, log, name=path.name)
    if (not fast) if save is None else save:
        nbformat.write(notebook, path)
    return seconds


def record(name: str, mode: str, seconds: float, path: Path = TIMES_FILE) -> None:
    """Store one measurement in ``run_times.json``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    times = load_times(path)
    times["machine"] = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    times["notebooks"].setdefault(name, {})[mode] = round(seconds, 1)
    times["notebooks"] = dict(sorted(times["notebooks"].items()))
    save_times(times, path)


def forget_full(name: str, path: Path = TIMES_FILE) -> None:
    """Drop the full-run time of ``name``: its committed outputs now come from a fast run."""
    times = load_times(path)
    times["notebooks"].get(name, {}).pop("full", None)
    save_times(times, path)


def write_texts(root: Path | None = None, times: dict | None = None) -> list[str]:
    """Rewrite each notebook's run-time line and the READMEs' run-time cells (in the checkout ``root``,
    by default :func:`helpers.paths.course_root`); return what changed."""
    import nbformat

    from helpers.paths import course_root

    root = root or course_root()
    times = times or load_times()
    changed = []
    for name in times["notebooks"]:
        path = root / "notebooks" / name
        notebook = nbformat.read(path, as_version=4)
        opening = notebook.cells[0]
        updated = RUN_TIME_LINE.sub(run_time_line(name, times), opening.source, count=1)
        if updated != opening.source:
            opening.source = updated
            nbformat.write(notebook, path)
            changed.append(name)
    for readme_path in (root / name for name in READMES):
        if not readme_path.exists():
            continue
        readme = readme_path.read_text()
        for name in times["notebooks"]:
            row = re.compile(rf"^(\| \[`{re.escape(name)}`\].*\| )([^|]*)( \|)$", re.MULTILINE)
            readme = row.sub(lambda m: m.group(1) + readme_cell(name, times) + m.group(3), readme)
        if readme != readme_path.read_text():
            readme_path.write_text(readme)
            changed.append(readme_path.name)
    return changed


def calibrate(repeats: int = 3) -> float:
    """Seconds of a fixed TensorFlow workload (best of ``repeats``): small dense training steps on
    seeded data, the kind of work the lessons do. Compare it with ``run_times.json``'s reference."""
    import numpy as np
    from helpers.tf_quiet import tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2048, 64)), tf.float32)
    y = tf.constant(rng.normal(size=(2048, 1)), tf.float32)
    w1 = tf.Variable(rng.normal(size=(64, 256)) * 0.05, dtype=tf.float32)
    w2 = tf.Variable(rng.normal(size=(256, 1)) * 0.05, dtype=tf.float32)

    @tf.function
    def steps(n):
        for _ in tf.range(n):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean((tf.nn.relu(x @ w1) @ w2 - y) ** 2)
            for v, g in zip((w1, w2), tape.gradient(loss, (w1, w2))):
                v.assign_sub(0.01 * g)
        return loss

    steps(tf.constant(2))  # trace once, outside the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        steps(tf.constant(200))
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.runtimes", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("execute", help="execute notebooks and record their run time")
    run.add_argument("--fast", action="store_true", help="COURSE_FAST=1; time only, outputs not saved")
    run.add_argument("--save", action="store_true", help="with --fast: save the outputs too (and forget any full-run "
                                                          "time, since the committed outputs are then a fast run's)")
    run.add_argument("--deadline", type=float, help="seconds the whole run of each notebook may take (default: "
                                                     "3 × its recorded run time + 5 min)")
    run.add_argument("notebooks", nargs="+", type=Path)
    commands.add_parser("write", help="render the notebooks' run-time lines and the README table")
    commands.add_parser("calibrate", help="record this machine's calibration seconds beside its run times")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        times = load_times()
        times["calibration_seconds"] = round(calibrate(), 3)
        save_times(times)
        print(f"calibration: {times['calibration_seconds']} s")
        return 0
    if args.command == "write":
        print("updated:", ", ".join(write_texts()) or "nothing")
        return 0
    for path in args.notebooks:
        mode = "fast" if args.fast else "full"
        print(f"{path.name} ({mode}) …", file=sys.stderr, flush=True)
        try:
            seconds = execute(path, args.fast, save=args.save or not args.fast, deadline=args.deadline)
        except NotebookTimeout as stopped:
            print(stopped, file=sys.stderr)
            return 1
        if path.resolve().parent.name == "notebooks":  # lessons only; solutions are executed, not listed
            record(path.name, mode, seconds)
            if args.fast and args.save:
                forget_full(path.name)
        print(f"{path.name} ({mode}): {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
