"""Nothing waits forever: the suite's own pytest options end a run whose worker crashed or whose
test overran its deadline, and conftest.py records which test each process is running (what
``.ci/run`` prints when it stops a run at its limit). The lock and download deadlines are tested in
test_download_and_data.py, a stuck kernel in test_progress_runtimes.py and test_browser.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import conftest

ROOT = Path(__file__).resolve().parent.parent
RUN_SECONDS = 180  # each pytest run below ends well within this, or the test fails with the run's output


def run_with_course_options(folder: Path, test_source: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run pytest on one test file in ``folder`` with this project's pytest options (addopts and
    timeout from pyproject.toml, the course's conftest left out); (the finished run, its seconds)."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    (folder / "pytest.ini").write_text(f"[pytest]\naddopts = {options['addopts']}\ntimeout = {options['timeout']}\n")
    (folder / "test_it.py").write_text(test_source)
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "test_it.py"],
                              cwd=folder, capture_output=True, text=True, timeout=RUN_SECONDS)
    except subprocess.TimeoutExpired as stuck:
        raise AssertionError(f"the run did not end within {RUN_SECONDS} s; it printed:\n{stuck.stdout}") from None
    return done, time.monotonic() - start


def test_a_crashed_worker_ends_the_run_with_a_clear_failure(tmp_path):
    """A worker killed mid-test (as the out-of-memory killer does) fails the run and says so;
    pytest-xdist 3.8.0 with --dist loadgroup can otherwise wait forever."""
    done, seconds = run_with_course_options(tmp_path, (
        "import os, signal, pytest\n"
        "@pytest.mark.xdist_group('a')\ndef test_killed():\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "@pytest.mark.xdist_group('a')\ndef test_after_it():\n    pass\n"
        "@pytest.mark.xdist_group('b')\ndef test_elsewhere():\n    pass\n"))
    assert done.returncode != 0, done.stdout
    assert "crashed while running 'test_it.py::test_killed" in done.stdout, done.stdout
    assert "FAILED test_it.py::test_killed" in done.stdout, done.stdout
    assert "replacing crashed worker" not in done.stdout  # the run stops, it does not start the crash again


def test_a_test_past_its_deadline_fails_and_the_run_goes_on(tmp_path):
    done, seconds = run_with_course_options(tmp_path, (
        "import time, pytest\n"
        "@pytest.mark.timeout(2)\ndef test_stuck():\n    time.sleep(600)\n"
        "def test_fine():\n    pass\n"))
    assert done.returncode == 1, done.stdout
    assert "Failed: Timeout" in done.stdout and "1 failed, 1 passed" in done.stdout, done.stdout
    assert seconds < 120


def test_the_running_test_is_recorded_while_it_runs(tmp_path, monkeypatch):
    """conftest's record: ``<folder>/<worker>.txt`` names the test while it runs, gone after."""
    monkeypatch.setenv(conftest.RUNNING_ENV, str(tmp_path))
    item = SimpleNamespace(nodeid="tests/test_x.py::test_y", config=SimpleNamespace(workerinput={"workerid": "gw3"}))
    protocol = conftest.pytest_runtest_protocol(item, None)  # a hook wrapper: runs up to the test, then after it
    next(protocol)
    assert (tmp_path / "gw3.txt").read_text().startswith("gw3: tests/test_x.py::test_y (running since ")
    assert list(os.scandir(tmp_path))[0].name == "gw3.txt"
    try:
        next(protocol)
    except StopIteration:
        pass
    assert not (tmp_path / "gw3.txt").exists()


def test_a_stuck_lab_kernel_is_shut_down_when_nbval_stops_it(tmp_path):
    """The browser check's kernel lives in a private JupyterLab. A cell that ignores interrupts
    passes nbval's cell timeout; nbval then calls ``stop()``, which must end the kernel (through the
    server) so that every later cell fails at once instead of waiting its own timeout."""
    from queue import Empty

    import nbformat
    import pytest

    from browser_panels import AttachedKernel, LabKernel

    path = tmp_path / "stuck.ipynb"
    nbformat.write(nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                     "language": "python"}}), path)
    lab = LabKernel(path)
    try:
        kernel = AttachedKernel(lab)
        message = kernel.execute_cell_input("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                                            "time.sleep(600)", allow_stdin=False)
        with pytest.raises(Empty):
            kernel.await_reply(message, timeout=3)  # nbval's cell timeout, shortened
        kernel.interrupt()                          # what nbval tries first: ignored by this cell
        start = time.monotonic()
        kernel.stop()
        while kernel.is_alive() and time.monotonic() - start < 30:
            time.sleep(0.2)
        assert not kernel.is_alive(), "the stuck kernel was still running 30 s after stop()"
    finally:
        lab.close()  # raises if a process of the server is left
