"""Shared test set-up.

nbval: skip notebooks whose real data cannot be reached, and never compare stderr
(TensorFlow's C++ start-up logs land there, with timestamps).

The browser check of the control panels: for each lesson with panels (``COURSE_BROWSER_LESSONS``:
``all`` by default, ``none``, or numbers such as ``01 05``), nbval runs the lesson's cells in a
kernel of a private JupyterLab (:class:`browser_panels.LabKernel`) instead of a kernel of its
own, and one more test after the last cell opens that notebook in headless Chromium, re-runs its
panel cells and moves every control (:func:`browser_panels.check_notebook`). The lesson is thus
run once, checked cell by cell by nbval and then used by a person in a browser. Without Chromium
or Playwright that test skips with one line and nbval runs as usual.

Parallel runs (pytest-xdist, ``-n auto --dist loadgroup`` in pyproject.toml): the cells of one
notebook (and its browser check) form one group, run in order by one worker in one kernel; the
longest lessons (by the fast-mode run times in ``helpers/run_times.json``) are handed out first
so that no worker is left with a long lesson at the end.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import psutil
import pytest
from nbval.plugin import IPyNbFile

import browser_panels
from helpers.download import MIRROR_ENV, is_available
from helpers.catalogue import LESSON_DATA, datasets_for
from helpers.runtimes import load_times
from helpers.widgets import lessons_with_panels

NOTEBOOK_DATA = LESSON_DATA  # which archives each lesson needs
MAX_WORKERS = 4  # each worker holds TensorFlow and a kernel (~2 GB); more rarely helps on a laptop
BROWSER_ENV = "COURSE_BROWSER_LESSONS"
BROWSER_CHECK_SECONDS = 1500  # one lesson's browser check at most: its panel cells re-run, every control moved
NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
CHROMIUM = browser_panels.find_chromium()


@functools.cache
def notebooks_with_panels() -> tuple[str, ...]:
    """The lesson notebooks that show a control panel (read once per test process)."""
    return tuple(lessons_with_panels(NOTEBOOKS))


def browser_lessons() -> list[str]:
    """The lesson notebooks whose panels are checked in the browser (by file name)."""
    chosen = os.environ.get(BROWSER_ENV, "all").split()
    with_panels = list(notebooks_with_panels())
    if chosen == ["none"]:
        return []
    return with_panels if chosen == ["all"] else [n for n in with_panels if n[:2] in chosen]


def browser_missing() -> str | None:
    """Why the browser check cannot run here, or None."""
    if CHROMIUM is None:
        return "no Chromium installed (Debian: apt-get install chromium); the browser check of the panels is skipped"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install playwright); the browser check of the panels is skipped"
    return None


def chosen_for_browser(path: Path) -> bool:
    """Whether the notebook at ``path`` is a lesson whose panels are to be checked in the browser."""
    return path.parent == NOTEBOOKS and path.name in browser_lessons()


def notebook_group(path: Path) -> str:
    """The xdist group of a notebook's tests: its cells and its browser check run together, in order."""
    return f"{path.parent.name}/{path.name}"


def data_missing(archives) -> str | None:
    """Why tests that read ``archives`` (keys of :data:`helpers.download.REGISTRY`) cannot run here
    — one line saying how to get them — or None when every archive is reachable."""
    missing = [name for name in archives if not is_available(name)]
    if not missing:
        return None
    return (f"real data not reachable ({', '.join(missing)}): connect to the internet or set "
            f"{MIRROR_ENV} to a folder or URL holding the archives (see the README, 'Data')")


def skip_without_data(*archives: str) -> None:
    """In a test or fixture: skip with :func:`data_missing`'s one line when an archive is unreachable."""
    reason = data_missing(archives)
    if reason:
        pytest.skip(reason)


_nbval_setup = IPyNbFile.setup


def _setup(self: IPyNbFile) -> None:
    """nbval's set-up, with the kernel inside a private JupyterLab for lessons checked in the browser."""
    if not chosen_for_browser(self.path) or browser_missing() is not None:
        return _nbval_setup(self)
    self.lab = browser_panels.LabKernel(self.path, self.config.option.nbval_kernel_startup_timeout)
    self.kernel = browser_panels.AttachedKernel(self.lab)
    self.setup_sanitize_files()


_nbval_teardown = IPyNbFile.teardown


def _teardown(self: IPyNbFile) -> None:
    _nbval_teardown(self)
    if getattr(self, "lab", None) is not None:
        lab, self.lab = self.lab, None
        lab.close()  # raises if a process of the server is left running


IPyNbFile.setup, IPyNbFile.teardown = _setup, _teardown


class PanelsInBrowser(pytest.Item):
    """After a lesson's cells: its control panels used in headless Chromium, in the kernel nbval ran."""

    def runtest(self):
        reason = browser_missing()
        if reason:
            pytest.skip(reason)
        lab = getattr(self.parent, "lab", None)
        if lab is None or not lab.alive():
            pytest.fail(f"{self.path.name}: the lesson's kernel is not running, so its panels cannot be checked")
        shots = self.config._tmp_path_factory.mktemp(f"panels-{self.path.stem}")
        print(f"screenshots of every panel after each move: {shots}")
        problems = browser_panels.check_lab_in_chromium(lab, browser_panels.panel_cells(self.path), shots, CHROMIUM)
        assert not problems, "\n".join(problems) + f"\n(screenshots: {shots})"

    def reportinfo(self):
        # a line number, not None: pytest's report of a skip marker needs one (None crashed it)
        return self.path, 0, f"{self.path.name}: control panels in the browser"


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per available core, at most :data:`MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_WORKERS))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    verdicts: dict[str, str | None] = {}
    last_cell: dict[IPyNbFile, int] = {}
    for position, item in enumerate(items):
        name = item.path.name
        if not name.endswith(".ipynb"):
            continue
        item.add_marker(pytest.mark.xdist_group(notebook_group(item.path)))
        last_cell[item.parent] = position
        if "stderr" not in item.parent.skip_compare:
            item.parent.skip_compare += ("stderr",)
        if name not in verdicts:
            verdicts[name] = data_missing(datasets_for(name))
        if verdicts[name]:
            item.add_marker(pytest.mark.skip(reason=verdicts[name]))
    for notebook, position in sorted(last_cell.items(), key=lambda pair: -pair[1]):  # insert from the end
        if chosen_for_browser(notebook.path):
            check = PanelsInBrowser.from_parent(notebook, name="control panels in the browser")
            check.add_marker(pytest.mark.xdist_group(notebook_group(notebook.path)))
            check.add_marker(pytest.mark.timeout(BROWSER_CHECK_SECONDS))
            if verdicts.get(notebook.path.name):
                check.add_marker(pytest.mark.skip(reason=verdicts[notebook.path.name]))
            items.insert(position + 1, check)
    fast_times = {name: t.get("fast", 0.0) for name, t in load_times()["notebooks"].items()}
    # stable sort: a notebook's cells keep their order, longest lessons first
    items.sort(key=lambda item: -fast_times.get(item.path.name, 0.0) if item.path.suffix == ".ipynb" else 0.0)


# ---------------------------------------------------------------- which test is running, for a stopped run

RUNNING_ENV = "COURSE_RUNNING_TESTS"  # a folder: each process writes the test it runs to <worker>.txt


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """With ``$COURSE_RUNNING_TESTS`` set, keep ``<folder>/<worker id>.txt`` naming the test this
    process is running and since when, removed when it ends: what ``.ci/run`` prints when it stops
    a run that overran its deadline."""
    folder = os.environ.get(RUNNING_ENV)
    if not folder:
        yield
        return
    worker = getattr(item.config, "workerinput", {}).get("workerid", "main")
    record = Path(folder) / f"{worker}.txt"
    record.write_text(f"{worker}: {item.nodeid} (running since {time.strftime('%H:%M:%S')})\n")
    yield
    record.unlink(missing_ok=True)


# ---------------------------------------------------------------- no process outlives the suite

SESSION_ENV = "COURSE_TEST_SESSION"  # inherited by workers, kernels, JupyterLab, Chromium and Flower processes


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist) names the session
        os.environ[SESSION_ENV] = f"{os.getpid()}-{time.time_ns()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process started by its tests is still running at the end (checked once,
    by the controller, after the other finish hooks — xdist's stops the workers)."""
    yield
    if hasattr(session.config, "workerinput"):
        return
    marker, me = os.environ.get(SESSION_ENV), os.getpid()
    deadline, left = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        left = []
        for process in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                if process.pid != me and process.environ().get(SESSION_ENV) == marker and process.status() != psutil.STATUS_ZOMBIE:
                    left.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:120]}")
            except (psutil.Error, OSError):
                continue
        if not left:
            return
        time.sleep(1)
    print("\nprocesses started by the tests are still running:\n  " + "\n  ".join(left))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
