"""The classroom mirror end to end on loopback: serve a cache, load MovieLens through it into an
empty cache, refuse what is not there and anything outside the cache."""

from __future__ import annotations

import http.client
import threading
import urllib.request

import pytest

from helpers import download, mirror
from helpers.data import load_movielens, main as data_main
from helpers.download import Archive, DataUnavailableError, fetch
from test_download_and_data import make_zip


@pytest.fixture
def classroom(tmp_path, monkeypatch):
    """A teacher's cache holding a (test-built) ml-latest-small, a secret file beside it, and an empty student cache."""
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    digest = make_zip(teacher / "ml-latest-small.zip")
    (tmp_path / "secret.txt").write_text("not for students")
    (teacher / "notes.txt").write_text("not an archive of the course")
    monkeypatch.setitem(download.REGISTRY, "ml-latest-small",
                        Archive("ml-latest-small.zip", "https://invalid.example/ml-latest-small.zip", sha256=digest))
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "student"))
    return teacher


def get(url: str) -> tuple[int, bytes]:
    host_port, path = url.split("/", 3)[2], "/" + url.split("/", 3)[3]
    connection = http.client.HTTPConnection(host_port, timeout=5)
    connection.request("GET", path)  # sent as written: no client-side normalisation of ../
    response = connection.getresponse()
    status, body = response.status, response.read()
    connection.close()
    return status, body


def test_a_student_loads_movielens_through_the_teachers_mirror(classroom, monkeypatch):
    with mirror.serving(classroom) as url:
        monkeypatch.setenv(download.MIRROR_ENV, url)
        data = load_movielens("latest-small")
        status, sums = get(url + "SHA256SUMS")
    assert data.n_users == 2
    assert status == 200 and download.REGISTRY["ml-latest-small"].sha256 in sums.decode()
    assert [t for t in threading.enumerate() if t.name == "course-mirror"] == []  # shut down


def test_a_missing_archive_is_a_404_and_a_clear_error(classroom, monkeypatch):
    with mirror.serving(classroom) as url:
        assert get(url + "hetrec2011-lastfm-2k.zip")[0] == 404
        monkeypatch.setenv(download.MIRROR_ENV, url)
        with pytest.raises(DataUnavailableError, match="hetrec2011-lastfm-2k.zip.*did not provide it"):
            fetch("lastfm-2k")


@pytest.mark.parametrize("path", ["../secret.txt", "%2e%2e/secret.txt", "%2E%2E%2Fsecret.txt", "..%2fsecret.txt",
                                  "/etc/passwd", "%2Fetc%2Fpasswd", "sub/../ml-latest-small.zip", "notes.txt",
                                  ".", "%00ml-latest-small.zip", "..\\secret.txt"])
def test_nothing_outside_the_course_archives_can_be_requested(classroom, path):
    with mirror.serving(classroom) as url:
        status, body = get(url + path)
    assert status == 404 and b"not for students" not in body


def test_requested_name_accepts_only_plain_names():
    assert mirror.requested_name("/ml-latest-small.zip?x=1") == "ml-latest-small.zip"
    for raw in ("/", "/../x", "/a/b", "/%2e%2e", "/.hidden", "x", "/a%5Cb"):
        assert mirror.requested_name(raw) is None, raw


def test_only_get_and_head_are_answered(classroom):
    with mirror.serving(classroom) as url:
        request = urllib.request.Request(url + "ml-latest-small.zip", method="HEAD")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and int(response.headers["Content-Length"]) > 0
        put = urllib.request.Request(url + "ml-latest-small.zip", data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(put, timeout=5)
        assert error.value.code == 501


def test_a_taken_port_and_an_empty_cache_are_explained(classroom, tmp_path):
    with mirror.serving(classroom) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(OSError, match=f"cannot serve on 127.0.0.1:{port}.*another --port"):
            mirror.make_server(classroom, port=port)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="download-all"):
        mirror.make_server(tmp_path / "empty")


def test_download_all_reports_each_archive_and_exits_non_zero_on_failure(classroom, monkeypatch, capsys):
    monkeypatch.setenv(download.MIRROR_ENV, classroom.as_uri())
    assert mirror.download_all(["ml-latest-small", "lastfm-2k"]) == {
        "ml-latest-small": "ok", "lastfm-2k": mirror.download_all(["lastfm-2k"])["lastfm-2k"]}
    assert data_main(["download-all", "ml-latest-small"]) == 0
    assert data_main(["download-all", "ml-latest-small", "lastfm-2k"]) == 1
    out = capsys.readouterr().out
    assert "ml-latest-small  ok (verified)" in out and "FAILED" in out and "failed: lastfm-2k" in out


def test_download_all_fails_only_for_required_archives_and_says_which_lessons_can_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path))
    for name in ("ml-latest-small", "cifar-10"):  # in the cache: the lessons that need only these can run
        (tmp_path / download.REGISTRY[name].filename).write_bytes(b"")
    outcome = {name: "ok" for name in download.REGISTRY} | {"ml-100k": "not reachable", "douban-movie": "not reachable"}
    monkeypatch.setattr(mirror, "download_all", lambda names=None: outcome)
    assert data_main(["download-all"]) == 0  # only optional archives missing
    out = capsys.readouterr().out
    assert "ml-100k          optional, not fetched (only the benchmarks' --variant 100k use it)" in out
    assert "douban-movie     optional, not fetched (lessons 06 and 08 use Douban book as the source instead)" in out
    assert "FAILED" not in out and "lesson 06 needs" in out and "lesson 05 needs" not in out
    assert data_main(["download-all", "ml-100k"]) == 1  # named explicitly: its miss is a failure
    monkeypatch.setitem(outcome, "lastfm-2k", "not reachable")
    assert data_main(["download-all"]) == 1
    out = capsys.readouterr().out
    assert "lastfm-2k        FAILED (lessons 06, 08 need it): not reachable" in out and "failed: lastfm-2k" in out
