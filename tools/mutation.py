"""Mutation testing of one helpers module, bounded: ``python tools/mutation.py MODULE [--timeout S]``.

mutmut (pyproject's ``[tool.mutmut]``) changes one thing at a time in ``helpers/MODULE.py`` and runs
the tests that import that module — leaving out the slow whole-lesson suites that are not the
module's own (:data:`INTEGRATION_TESTS`; ``--all-tests`` keeps them); a mutant no test notices "survived". Each run happens in its own
folder, ``build/mutation/MODULE/`` (a copy of ``helpers/``, ``tests/``, ``conftest.py`` and
``pyproject.toml`` whose ``[tool.mutmut]`` names the module and its tests), so runs over different
modules never share state and the checkout is never touched.

Why this terminates: mutmut's default forks each mutant's process from one that has already run
TensorFlow, and such a child blocks on its first TensorFlow op at zero CPU, where mutmut's CPU-time
limit never fires. ``process_isolation = "forkserver"`` forks every mutant from a clean server
instead, and the whole run is bounded here by a wall-clock ``--timeout`` (a run stopped there keeps
what it checked). The summary (mutants, killed, survived, not checked, seconds) is printed as JSON
and written to ``build/mutation/MODULE.json``; ``--survivors`` lists the surviving mutants' names
(``cd build/mutation/MODULE && ../../../.venv/bin/mutmut show NAME`` shows one as a diff).

``--again`` re-runs, in the same folder, only the mutants that were not killed — survived, had no
test, or were not reached before a timeout — against the tests as they are now (after new tests
were written): the summary then counts every mutant of the module, old verdicts and new. It refuses
when the module itself changed since (its mutants would no longer be the same).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TIMEOUT_SECONDS = 1800
# the modules whose mutation scores issue 41 asks for: the federated core and everything built on it
MODULES = ("fedcore", "federated", "federated_vision", "fedsoftmax", "compression", "privacy", "security",
           "cross_domain")
# Test files that reach most modules only through a whole lesson's pipeline — Flower processes, CNN
# clients, softmax over the catalogue, the cold-start pipeline, the benchmarks — at up to a minute per
# mutant. A module's mutants run against such a file only when it is the module's own (named here) or
# when ``--all-tests`` asks for every importing file: so a run over the core ends within its timeout.
INTEGRATION_TESTS = {"test_flower.py": ("flower_rounds", "flower_deploy"), "test_fedsoftmax.py": ("fedsoftmax",),
                     "test_federated_transfer.py": ("federated_vision",), "test_fedcrossdomain.py": ("fedcrossdomain",),
                     "test_bench.py": ("bench",)}
# mutmut's own exit-code meaning (mutmut.stats.status_by_exit_code), kept here so that reading a
# summary does not need mutmut installed
STATUS_BY_EXIT_CODE = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
                       36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
                       -11: "segfault", -9: "segfault", 37: "caught by type check", 2: "interrupted"}


def tests_importing(module: str, tests_dir: Path = ROOT / "tests") -> list[str]:
    """The test files (paths relative to the course root, sorted) that import ``helpers.<module>``:
    ``import helpers.m``, ``from helpers.m import x`` or ``from helpers import m``."""
    found = []
    for path in sorted(tests_dir.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import) and any(a.name == f"helpers.{module}" for a in node.names):
                break
            if isinstance(node, ast.ImportFrom) and (
                    node.module == f"helpers.{module}"
                    or (node.module == "helpers" and any(a.name == module for a in node.names))):
                break
        else:
            continue
        found.append(path.relative_to(tests_dir.parent).as_posix())
    return found


def chosen_tests(module: str, tests_dir: Path = ROOT / "tests", every: bool = False) -> list[str]:
    """The test files a module's mutants run against: :func:`tests_importing`, without the
    :data:`INTEGRATION_TESTS` that are not the module's own (all of them with ``every``)."""
    found = tests_importing(module, tests_dir)
    if every:
        return found
    return [t for t in found if module in INTEGRATION_TESTS.get(Path(t).name, (module,))]


def module_config(pyproject_text: str, module: str, tests: list[str]) -> str:
    """``pyproject.toml`` for one module's run: the project's own with ``[tool.mutmut]`` extended by the
    module to mutate (``only_mutate``) and the tests to run (``pytest_add_cli_args_test_selection``)."""
    if "[tool.mutmut]" not in pyproject_text:
        raise ValueError("pyproject.toml has no [tool.mutmut] section: the shared mutmut settings live there")
    extra = (f'only_mutate = ["helpers/{module}.py"]\n'
             f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n")
    text = pyproject_text.replace("[tool.mutmut]\n", "[tool.mutmut]\n" + extra, 1)
    tomllib.loads(text)  # still valid TOML
    return text


def prepare(module: str, workdir: Path, every: bool = False) -> list[str]:
    """Copy what the tests need into ``workdir`` (emptied first) with the module's config; returns the
    test files chosen (:func:`chosen_tests`). Raises ``ValueError`` for a module that does not exist
    or that no test imports."""
    source = ROOT / "helpers" / f"{module}.py"
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", module) or not source.is_file():
        raise ValueError(f"no module helpers/{module}.py; choose one of: " + ", ".join(MODULES))
    tests = chosen_tests(module, ROOT / "tests", every)
    if not tests:
        raise ValueError(f"no test file imports helpers.{module}: there is nothing to kill its mutants")
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    shutil.copytree(ROOT / "helpers", workdir / "helpers", ignore=ignore)
    shutil.copytree(ROOT / "tests", workdir / "tests", ignore=ignore)
    shutil.copy2(ROOT / "conftest.py", workdir / "conftest.py")
    (workdir / "notebooks").mkdir()  # marks the course root for helpers.paths
    pyproject = module_config((ROOT / "pyproject.toml").read_text(encoding="utf-8"), module, tests)
    (workdir / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return tests


def exit_codes(module: str, workdir: Path) -> dict:
    """mutmut's record of the module's mutants, name → exit code of its test run (None: not run yet),
    from ``mutants/helpers/<module>.py.meta``; empty before mutmut has written it."""
    meta = workdir / "mutants" / "helpers" / f"{module}.py.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}


def summarise(module: str, workdir: Path, seconds: float, stopped: bool) -> dict:
    """Counts by mutmut status from ``mutants/helpers/<module>.py.meta``, with the score
    killed / (mutants checked), the run's seconds and whether the timeout stopped it."""
    codes = exit_codes(module, workdir)
    counts = Counter("not checked" if code is None else STATUS_BY_EXIT_CODE.get(code, "suspicious")
                     for code in codes.values())
    checked = sum(n for status, n in counts.items() if status != "not checked")
    killed = counts["killed"] + counts["timeout"] + counts["caught by type check"]
    return {"module": module, "mutants": len(codes), "checked": checked, "killed": killed,
            "survived": counts["survived"], "no_tests": counts["no tests"],
            "not_checked": counts["not checked"], "other": checked - killed - counts["survived"] - counts["no tests"],
            "score": round(killed / checked, 3) if checked else None,
            "seconds": round(seconds), "stopped_by_timeout": stopped}


def survivors(module: str, workdir: Path) -> list[str]:
    """The names of the module's surviving mutants (for ``mutmut show``)."""
    return sorted(name for name, code in exit_codes(module, workdir).items() if code == 0)


# the verdicts ``--again`` runs once more: survived, no tests (0 and 5 / 33) and not run yet (None)
NOT_KILLED = (None, 0, 5, 33)


def prepare_again(module: str, workdir: Path, root: Path = ROOT) -> tuple[list[str], list[str]]:
    """Refresh ``workdir/tests`` from the checkout for a re-run of the mutants not killed; returns
    (the test files the run was configured with, the mutants to run again). Raises ``ValueError``
    when there is no earlier run of the module or the module changed since it."""
    codes = exit_codes(module, workdir)
    if not codes:
        raise ValueError(f"no earlier run of helpers/{module}.py in {workdir}: run it without --again first")
    if (workdir / "helpers" / f"{module}.py").read_bytes() != (root / "helpers" / f"{module}.py").read_bytes():
        raise ValueError(f"helpers/{module}.py changed since its run, so its mutants did too: run it without --again")
    shutil.rmtree(workdir / "tests")
    shutil.copytree(root / "tests", workdir / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    tests = tomllib.loads((workdir / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mutmut"][
        "pytest_add_cli_args_test_selection"]
    return tests, sorted(name for name, code in codes.items() if code in NOT_KILLED)


def run(module: str, timeout: float, max_children: int, every: bool = False, again: bool = False) -> dict:
    """Prepare, run mutmut under a wall-clock ``timeout`` (s; its whole process group is killed
    then) and summarise; ``every``: against every test file importing the module; ``again``: only the
    mutants an earlier run did not kill (:func:`prepare_again`)."""
    workdir = ROOT / "build" / "mutation" / module
    names = []
    if again:
        tests, names = prepare_again(module, workdir)
    else:
        tests = prepare(module, workdir, every)
    which = f"{len(names)} mutants not killed before" if again else "mutants"
    print(f"helpers/{module}.py: {which} run against {', '.join(tests)}; at most {timeout:.0f} s", flush=True)
    env = {**os.environ, "COURSE_ROOT": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=workdir, env=env, start_new_session=True)
    stopped = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stopped = True
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    summary = summarise(module, workdir, time.monotonic() - start, stopped)
    summary["mutmut_exit_code"] = process.returncode
    summary["tests"] = tests
    (workdir.parent / f"{module}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("module", help="a helpers module, e.g. " + ", ".join(MODULES))
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS,
                        help="wall-clock limit of the whole run in seconds (default %(default)s)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1,
                        help="mutants tested at once (default: the number of cores)")
    parser.add_argument("--survivors", action="store_true", help="also list the surviving mutants' names")
    parser.add_argument("--all-tests", action="store_true",
                        help="run the mutants against every test file importing the module, the slow whole-lesson "
                             "ones too (default: only the module's own among those)")
    parser.add_argument("--again", action="store_true",
                        help="re-run only the mutants the last run of this module did not kill, against the "
                             "tests as they are now")
    args = parser.parse_args(argv)
    if args.timeout <= 0 or args.max_children < 1:
        parser.error("--timeout must be > 0 s and --max-children ≥ 1")
    if args.again and args.all_tests:
        parser.error("--again keeps the tests the earlier run chose; leave out --all-tests")
    try:
        summary = run(args.module, args.timeout, args.max_children, args.all_tests, args.again)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(summary))
    if args.survivors:
        print("\n".join(survivors(args.module, ROOT / "build" / "mutation" / args.module)))
    return 0 if summary["mutmut_exit_code"] == 0 and not summary["stopped_by_timeout"] else 1


if __name__ == "__main__":
    sys.exit(main())
