"""helpers.startup: the start-here check reads versions, data locations and run times correctly."""

from __future__ import annotations

import pytest

from helpers import download, runtimes, startup
from helpers.download import Archive


@pytest.mark.parametrize("installed, spec, ok", [("2.21.0", "~=2.21.0", True), ("2.21.4", "~=2.21.0", True),
                                                 ("2.22.0", "~=2.21.0", False), ("2.20.9", "~=2.21.0", False),
                                                 ("8.1.9", "~=8.1.7", True), ("1.0", "", True), ("3.11.7", ">=3.11", True),
                                                 ("0.11.0", "==0.11.0", True), ("0.11.1", "==0.11.0", False)])
def test_version_specifiers(installed, spec, ok):
    assert startup._satisfies(installed, spec) is ok


def test_required_versions_are_the_installed_package_s_declared_dependencies():
    required = startup.required_versions()
    assert required["tensorflow"][0].startswith("~=") and required["tensorflow"][1] is None  # what the lessons need
    assert required["nbval"][0].startswith("~=") and required["nbval"][1] == "test"
    assert required["sphinx"][1] == "site"
    assert all(name == name.lower() and "[" not in name for name in required)


def test_a_missing_package_fails_the_check_only_when_the_lessons_need_it(monkeypatch):
    monkeypatch.setattr(startup, "required_versions", lambda: {"tensorflow": ("~=2.21.0", None),
                                                              "no-such-package-x": ("~=1.0", None),
                                                              "no-such-package-y": ("~=1.0", "test")})
    table = startup.package_versions().set_index("package")
    assert table.loc["tensorflow", "ok"] and table.loc["no-such-package-y", "ok"]
    assert not table.loc["no-such-package-x", "ok"] and table.loc["no-such-package-x", "installed"] == "missing"
    assert table.loc["no-such-package-y", "needed for"] == "the tests (make test)"


def test_every_article_section_maps_to_a_real_cell():
    table = startup.course_map()
    assert len(table) == len(startup.COURSE_MAP) and (table["cell"] >= 1).all()


def test_predicted_run_times_scale_with_the_calibration():
    times = {"calibration_seconds": 1.0, "notebooks": {"01_x.ipynb": {"full": 120.0, "fast": 30.0}}}
    assert startup.predicted_run_times(2.0, times).loc["01_x.ipynb"].tolist() == ["about 4 minutes", "about 1 minute"]
    with pytest.raises(ValueError, match="calibrate"):
        startup.predicted_run_times(1.0, {"notebooks": {}})


def test_dataset_status_names_the_source_and_says_what_to_do(tmp_path, monkeypatch):
    (tmp_path / "cache").mkdir()
    (tmp_path / "mirror").mkdir()
    (tmp_path / "cache" / "a.zip").write_bytes(b"a")
    (tmp_path / "mirror" / "b.zip").write_bytes(b"b")
    monkeypatch.setattr(download, "REGISTRY", {
        "ml-latest-small": Archive("a.zip", (tmp_path / "nowhere" / "a.zip").as_uri()),
        "cifar-10": Archive("b.zip", (tmp_path / "nowhere" / "b.zip").as_uri()),
        "lastfm-2k": Archive("c.zip", (tmp_path / "nowhere" / "c.zip").as_uri())})
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(download.MIRROR_ENV, str(tmp_path / "mirror"))
    table = startup.dataset_status().set_index("dataset")
    assert table.loc["ml-latest-small", "what to do"] == "ready"
    assert table.loc["cifar-10", "mirror"] and "mirror" in table.loc["cifar-10", "what to do"]
    assert table.loc["lastfm-2k", "what to do"].startswith("not reachable") and "COURSE_DATA_MIRROR" in table.loc["lastfm-2k", "what to do"]
    assert table.loc["cifar-10", "used by lessons"] == "05, 07, 09"


def test_calibration_is_a_positive_number_of_seconds():
    assert 0 < runtimes.calibrate(repeats=1) < 60


def test_an_optional_archive_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "REGISTRY", {"douban-movie": Archive("m.dat", (tmp_path / "none" / "m.dat").as_uri())})
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    row = startup.dataset_status(check_publisher=False).iloc[0]
    assert row["used by lessons"] == "06, 08" and row["what to do"].startswith("optional") and "book" in row["what to do"]
