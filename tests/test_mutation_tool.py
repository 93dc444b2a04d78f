"""tools/mutation.py: which tests a module's mutants run against, the per-module mutmut config, the
summary read from mutmut's records, and the errors for a module that cannot be mutation-tested."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("course_mutation_tool", ROOT / "tools" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mutation = load_tool()


def test_tests_importing_finds_every_import_form_and_nothing_else(tmp_path):
    files = {
        "test_a.py": "import helpers.fedcore\n",
        "test_b.py": "from helpers.fedcore import Task\n",
        "test_c.py": "from helpers import metrics, fedcore\n",
        "test_d.py": "from helpers import fedcore_extra\nimport helpers.federated\n",
        "test_e.py": "def f():\n    from helpers import fedcore\n",  # an import inside a function counts
        "helper_f.py": "import helpers.fedcore\n",  # not a test file
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    found = mutation.tests_importing("fedcore", tmp_path)
    prefix = tmp_path.name
    assert found == [f"{prefix}/test_a.py", f"{prefix}/test_b.py", f"{prefix}/test_c.py", f"{prefix}/test_e.py"]
    assert mutation.tests_importing("federated", tmp_path) == [f"{prefix}/test_d.py"]
    assert mutation.tests_importing("privacy", tmp_path) == []


def test_every_listed_module_exists_and_has_tests():
    for module in mutation.MODULES:
        assert (ROOT / "helpers" / f"{module}.py").is_file(), module
        assert mutation.tests_importing(module), f"no test imports helpers.{module}"


def test_module_config_names_module_and_tests_and_keeps_shared_settings():
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    text = mutation.module_config(project, "compression", ["tests/test_compression.py"])
    config = tomllib.loads(text)["tool"]["mutmut"]
    assert config["only_mutate"] == ["helpers/compression.py"]
    assert config["pytest_add_cli_args_test_selection"] == ["tests/test_compression.py"]
    # the shared settings that make a run terminate are still there
    assert config["process_isolation"] == "forkserver"
    assert config["pytest_add_cli_args"][:2] == ["-n", "0"]
    assert tomllib.loads(text)["tool"]["pytest"] == tomllib.loads(project)["tool"]["pytest"]


def test_module_config_without_mutmut_section_says_where_settings_live():
    with pytest.raises(ValueError, match=r"\[tool.mutmut\]"):
        mutation.module_config("[project]\nname = 'x'\n", "fedcore", ["tests/test_fedcore.py"])


@pytest.mark.parametrize("module", ["no_such_module", "../helpers/fedcore", "Fedcore"])
def test_prepare_rejects_a_module_that_does_not_exist(module, tmp_path):
    with pytest.raises(ValueError, match="no module helpers/.*choose one of: fedcore"):
        mutation.prepare(module, tmp_path / "work")
    assert not (tmp_path / "work").exists()  # nothing created


def test_prepare_rejects_a_module_no_test_imports(tmp_path, monkeypatch):
    course = tmp_path / "course"
    (course / "helpers").mkdir(parents=True)
    (course / "tests").mkdir()
    (course / "helpers" / "lonely.py").write_text("def f():\n    return 1\n")
    (course / "tests" / "test_other.py").write_text("from helpers import other\n")
    monkeypatch.setattr(mutation, "ROOT", course)
    with pytest.raises(ValueError, match="no test file imports helpers.lonely"):
        mutation.prepare("lonely", tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_prepare_copies_what_the_tests_need_and_replaces_an_old_run(tmp_path):
    work = tmp_path / "work"
    (work / "mutants").mkdir(parents=True)
    (work / "mutants" / "stale").write_text("from a previous run")
    tests = mutation.prepare("compression", work)
    assert tests == mutation.chosen_tests("compression") and "tests/test_fedcore.py" in tests
    assert not (work / "mutants").exists()
    for path in ("helpers/compression.py", *tests, "conftest.py", "notebooks"):
        assert (work / path).exists(), path
    config = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == ["helpers/compression.py"]
    assert config["pytest_add_cli_args_test_selection"] == tests


def write_meta(work: Path, module: str, codes: dict) -> None:
    meta = work / "mutants" / "helpers" / f"{module}.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


def test_summarise_counts_each_status_and_scores_only_checked_mutants(tmp_path):
    codes = {"m__a__mutmut_1": 1, "m__a__mutmut_2": 3, "m__a__mutmut_3": 0, "m__b__mutmut_1": -24,
             "m__b__mutmut_2": 33, "m__b__mutmut_3": None, "m__b__mutmut_4": None, "m__c__mutmut_1": -11}
    write_meta(tmp_path, "fedcore", codes)
    summary = mutation.summarise("fedcore", tmp_path, 12.4, stopped=True)
    assert summary == {"module": "fedcore", "mutants": 8, "checked": 6, "killed": 3, "survived": 1,
                       "no_tests": 1, "not_checked": 2, "other": 1, "score": 0.5, "seconds": 12,
                       "stopped_by_timeout": True}
    assert mutation.survivors("fedcore", tmp_path) == ["m__a__mutmut_3"]


def test_summarise_before_any_mutant_ran(tmp_path):
    summary = mutation.summarise("fedcore", tmp_path, 3.0, stopped=True)
    assert summary["mutants"] == summary["checked"] == 0 and summary["score"] is None
    assert mutation.survivors("fedcore", tmp_path) == []


@pytest.mark.parametrize("argv", [["fedcore", "--timeout", "0"], ["fedcore", "--max-children", "0"],
                                  ["no_such_module", "--timeout", "1"], ["fedcore", "--again", "--all-tests"]])
def test_command_line_refuses_impossible_values(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        mutation.main(argv)
    assert stop.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_chosen_tests_leave_out_the_slow_whole_lesson_suites_that_are_not_the_module_s_own():
    every = mutation.tests_importing("fedcore")
    chosen = mutation.chosen_tests("fedcore")
    assert "tests/test_flower.py" in every and "tests/test_fedsoftmax.py" in every
    assert "tests/test_fedcore.py" in chosen and "tests/test_federated.py" in chosen
    assert not {"tests/test_flower.py", "tests/test_fedsoftmax.py", "tests/test_federated_transfer.py",
                "tests/test_fedcrossdomain.py"} & set(chosen)
    assert mutation.chosen_tests("fedcore", every=True) == every
    # a suite stays for the module it is the own test of
    assert "tests/test_fedsoftmax.py" in mutation.chosen_tests("fedsoftmax")
    assert "tests/test_federated_transfer.py" in mutation.chosen_tests("federated_vision")
    for module in mutation.MODULES:            # every listed module keeps at least one test file
        assert mutation.chosen_tests(module), module


def test_again_reruns_only_what_was_not_killed_against_the_tests_as_they_are_now(tmp_path):
    work = tmp_path / "work"
    tests = mutation.prepare("compression", work)
    (work / "tests" / "test_compression.py").write_text("# the tests of the earlier run")
    write_meta(work, "compression", {"m__a__mutmut_1": 1, "m__a__mutmut_2": 0, "m__b__mutmut_1": 33,
                                     "m__b__mutmut_2": None, "m__c__mutmut_1": -24, "m__c__mutmut_2": 5})
    again_tests, names = mutation.prepare_again("compression", work)
    assert again_tests == tests
    assert names == ["m__a__mutmut_2", "m__b__mutmut_1", "m__b__mutmut_2", "m__c__mutmut_2"]
    assert (work / "tests" / "test_compression.py").read_text() == (ROOT / "tests" / "test_compression.py").read_text()


def test_again_refuses_without_an_earlier_run_or_after_the_module_changed(tmp_path):
    work = tmp_path / "work"
    mutation.prepare("compression", work)
    with pytest.raises(ValueError, match="no earlier run of helpers/compression.py"):
        mutation.prepare_again("compression", work)
    write_meta(work, "compression", {"m__a__mutmut_1": 0})
    (work / "helpers" / "compression.py").write_text("# an older version")
    with pytest.raises(ValueError, match="changed since its run"):
        mutation.prepare_again("compression", work)
