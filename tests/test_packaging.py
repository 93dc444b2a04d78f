"""The course package installs as a package: a built wheel holds every file ``helpers`` reads, works
from a clone without the editable install (lesson 00's checks), and the light modules import
without TensorFlow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SUBPROCESS_SECONDS = 300  # every child process here is waited for at most this long (a build, an install, an import)
LIGHT_MODULES = ("findings", "exercises", "runtimes", "data", "download", "fedcore", "catalogue", "lessons", "startup", "paths",
                 "config", "metrics", "splits", "mirror", "federated", "privacy", "compression", "flower_rounds")


def tracked_package_files() -> set[str]:
    listed = subprocess.run(["git", "ls-files", "helpers"], cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS, check=True)
    return {line for line in listed.stdout.splitlines() if line}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the tracked package files: setuptools writes build/ and
    *.egg-info next to the sources, and the tests using this fixture may run on two xdist workers
    at once (each building), which raced in the checkout itself."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in tracked_package_files() | {"pyproject.toml"}:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "-w", str(out), str(source)], capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)
    assert build.returncode == 0, build.stderr[-3000:]
    (built,) = out.glob("fedtl_course_helpers-*.whl")
    return built


def test_the_wheel_holds_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(tracked_package_files() - names)
    assert not missing, f"pyproject.toml leaves these out of the wheel: {missing}"
    assert {"helpers/run_times.json", "helpers/flower_app/pyproject.toml",
            "helpers/flower_app/course_flower/server_app.py"} <= names


def test_an_installed_wheel_runs_lesson_00_s_checks_from_the_clone(wheel, tmp_path):
    target = tmp_path / "site-packages"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=SUBPROCESS_SECONDS)
    script = (
        "import helpers, sys\n"
        f"assert helpers.__file__.startswith({str(target)!r}), helpers.__file__\n"
        "from helpers import download, runtimes, startup\n"
        "from helpers.paths import course_root\n"
        f"assert course_root() == __import__('pathlib').Path({str(ROOT)!r}), course_root()\n"
        "assert startup.required_versions()['tensorflow'][0].startswith('~=')\n"
        "assert len(startup.course_map()) == len(startup.COURSE_MAP)\n"
        "assert set(startup.dataset_status(check_publisher=False)['dataset']) == set(download.REGISTRY)\n"
        "assert len(startup.predicted_run_times(runtimes.load_times()['calibration_seconds']))\n"
        "from helpers import flower_deploy\n"
        "assert (flower_deploy.APP_DIR / 'pyproject.toml').exists()\n"
        "print('ok')\n")
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("COURSE_ROOT", None)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=SUBPROCESS_SECONDS)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_light_modules_import_without_tensorflow():
    script = ("import sys\n" + "".join(f"import helpers.{name}\n" for name in LIGHT_MODULES)
              + "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=SUBPROCESS_SECONDS, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]", f"importing {LIGHT_MODULES} loaded {run.stdout.strip()}"


def test_a_training_module_loads_tensorflow_without_start_up_lines():
    run = subprocess.run([sys.executable, "-c", "import helpers.softmax, sys; assert 'tensorflow' in sys.modules"],
                         capture_output=True, text=True, timeout=SUBPROCESS_SECONDS, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                                      if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert run.returncode == 0 and run.stderr.strip() == "", run.stderr[-2000:]
