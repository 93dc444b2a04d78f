"""The data layer on small archives built here in the official layouts (no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from helpers import download
from helpers.data import DataFormatError, load_movielens
from helpers.download import Archive, ChecksumError, DataUnavailableError, fetch

RATINGS = "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.5,200\n2,10,5.0,150\n2,30,0.5,160\n"
MOVIES = "movieId,title,genres\n10,Alpha (1990),Drama\n20,Beta (1991),Comedy|Drama\n30,Gamma (1992),Horror\n40,Delta (1993),Drama\n"


def make_zip(path: Path, ratings: str = RATINGS, movies: str = MOVIES, comment: bytes = b"") -> str:
    """Write an ml-latest-small style zip; return its sha256."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-latest-small/ratings.csv", ratings)
        archive.writestr("ml-latest-small/movies.csv", movies)
        archive.comment = comment
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty cache, no mirror, and an 'official' ml-latest-small served from a folder."""
    official = tmp_path / "official"
    official.mkdir()
    digest = make_zip(official / "ml-latest-small.zip")
    cache = tmp_path / "cache"
    monkeypatch.setenv(download.CACHE_ENV, str(cache))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(
        download.REGISTRY,
        "ml-latest-small",
        Archive("ml-latest-small.zip", (official / "ml-latest-small.zip").as_uri(), sha256=digest),
    )
    return {"official": official, "cache": cache, "sha256": digest, "tmp": tmp_path}


def set_official_sha(monkeypatch, sha256: str):
    spec = download.REGISTRY["ml-latest-small"]
    monkeypatch.setitem(download.REGISTRY, "ml-latest-small", Archive(spec.filename, spec.url, sha256=sha256))


def test_download_verify_and_load(env):
    data = load_movielens("latest-small")
    assert (env["cache"] / "ml-latest-small.zip").exists()
    assert list(data.ratings.columns) == ["user_id", "item_id", "rating", "timestamp", "user_idx", "item_idx"]
    assert data.n_users == 2 and data.n_items == 4  # catalogue includes the never-rated movie 40
    assert data.ratings["item_idx"].tolist() == [0, 1, 0, 2]
    assert data.items.loc[1, "title"] == "Beta (1991)"
    assert data.user_idx(2) == 1


def test_cache_is_used_offline(env):
    fetch("ml-latest-small")
    (env["official"] / "ml-latest-small.zip").unlink()  # the network is gone
    assert fetch("ml-latest-small") == env["cache"] / "ml-latest-small.zip"


def test_checksum_mismatch_names_file_hashes_and_deletes(env, monkeypatch):
    set_official_sha(monkeypatch, "0" * 64)
    with pytest.raises(ChecksumError) as error:
        fetch("ml-latest-small")
    message = str(error.value)
    assert "ml-latest-small.zip" in message and "0" * 64 in message and env["sha256"] in message
    assert "deleted" in message
    assert not (env["cache"] / "ml-latest-small.zip").exists()
    assert not (env["cache"] / ".partial").exists() or not any((env["cache"] / ".partial").iterdir())


def test_md5_only_archive_is_verified(env, monkeypatch):
    spec = download.REGISTRY["ml-latest-small"]
    good = hashlib.md5((env["official"] / spec.filename).read_bytes()).hexdigest()
    monkeypatch.setitem(download.REGISTRY, "ml-latest-small", Archive(spec.filename, spec.url, md5=good))
    assert fetch("ml-latest-small").exists()


def test_corrupt_cached_file_is_reported(env):
    env["cache"].mkdir()
    (env["cache"] / "ml-latest-small.zip").write_bytes(b"partial download")
    with pytest.raises(ChecksumError, match="not an accepted build"):
        fetch("ml-latest-small")


def test_offline_without_mirror_says_how_to_get_data(env):
    (env["official"] / "ml-latest-small.zip").unlink()
    with pytest.raises(DataUnavailableError) as error:
        fetch("ml-latest-small")
    message = str(error.value)
    assert download.MIRROR_ENV in message
    assert str(env["cache"] / "ml-latest-small.zip") in message
    assert "internet" in message


def make_mirror(env, comment: bytes, listed: bool) -> Path:
    mirror = env["tmp"] / "mirror"
    mirror.mkdir()
    digest = make_zip(mirror / "ml-latest-small.zip", comment=comment)  # a re-zip: other bytes
    if listed:
        (mirror / "SHA256SUMS").write_text(f"{digest}  ml-latest-small.zip\n{'1' * 64}  other.zip\n")
    return mirror


@pytest.mark.parametrize("as_url", [False, True])
def test_mirror_build_listed_in_sums_is_accepted_and_announced(env, monkeypatch, capsys, as_url):
    mirror = make_mirror(env, b"re-zipped", listed=True)
    monkeypatch.setenv(download.MIRROR_ENV, mirror.as_uri() if as_url else str(mirror))
    (env["official"] / "ml-latest-small.zip").unlink()  # proves the mirror was used
    data = load_movielens()
    assert data.n_users == 2
    first = capsys.readouterr().out
    assert "differs from the official release" in first and "SHA256SUMS" in first
    load_movielens()  # from the cache: still says which file it is
    assert "not the official release" in capsys.readouterr().out


def test_a_cached_build_is_replaced_when_the_mirror_lists_another(env, monkeypatch, capsys):
    """Subset first, full build later (CIFAR-10): the mirror's listed build wins over the cached one."""
    first = make_mirror(env, b"subset", listed=True)
    monkeypatch.setenv(download.MIRROR_ENV, str(first))
    fetch("ml-latest-small")
    second = env["tmp"] / "mirror-full"
    second.mkdir()
    digest = make_zip(second / "ml-latest-small.zip", comment=b"full build")
    (second / "SHA256SUMS").write_text(f"{digest}  ml-latest-small.zip\n")
    monkeypatch.setenv(download.MIRROR_ENV, str(second))
    capsys.readouterr()
    path = fetch("ml-latest-small")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "is not the build the mirror lists" in capsys.readouterr().out
    fetch("ml-latest-small")  # now cached: no second replacement
    assert "replacing" not in capsys.readouterr().out


def test_a_cached_build_survives_when_the_listed_build_cannot_be_fetched(env, monkeypatch):
    first = make_mirror(env, b"subset", listed=True)
    monkeypatch.setenv(download.MIRROR_ENV, str(first))
    cached = fetch("ml-latest-small").read_bytes()
    broken = env["tmp"] / "mirror-broken"
    broken.mkdir()
    (broken / "SHA256SUMS").write_text(f"{'2' * 64}  ml-latest-small.zip\n")  # lists a build it does not hold
    monkeypatch.setenv(download.MIRROR_ENV, str(broken))
    with pytest.raises(DataUnavailableError, match="mirror"):
        fetch("ml-latest-small")
    assert (env["cache"] / "ml-latest-small.zip").read_bytes() == cached


def test_mirror_build_not_listed_is_rejected(env, monkeypatch):
    mirror = make_mirror(env, b"tampered", listed=False)
    monkeypatch.setenv(download.MIRROR_ENV, str(mirror))
    with pytest.raises(ChecksumError, match="checksum mismatch for ml-latest-small.zip"):
        fetch("ml-latest-small")
    assert not (env["cache"] / "ml-latest-small.zip").exists()


def test_mirror_without_the_file(env, monkeypatch):
    empty = env["tmp"] / "empty-mirror"
    empty.mkdir()
    monkeypatch.setenv(download.MIRROR_ENV, str(empty))
    with pytest.raises(DataUnavailableError, match="mirror"):
        fetch("ml-latest-small")


def test_http_mirror(env, monkeypatch):
    mirror = make_mirror(env, b"", listed=True)  # same bytes as official
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(download.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        assert download.is_available("ml-latest-small")
        assert fetch("ml-latest-small").exists()
    finally:
        server.shutdown()


def test_is_available(env, monkeypatch):
    assert download.is_available("ml-latest-small")
    (env["official"] / "ml-latest-small.zip").unlink()
    assert not download.is_available("ml-latest-small")


def test_first_download_of_unknown_checksum_is_recorded(env, monkeypatch, capsys):
    spec = download.REGISTRY["ml-latest-small"]
    monkeypatch.setitem(download.REGISTRY, "ml-latest-small", Archive(spec.filename, spec.url))
    path = fetch("ml-latest-small")
    assert "recorded the sha256" in capsys.readouterr().out
    path.write_bytes(b"changed later")
    with pytest.raises(ChecksumError):
        fetch("ml-latest-small")


@pytest.mark.parametrize(
    "ratings, problem",
    [
        ("userId,movieId,rating,timestamp\n1,10,7.0,100\n", "outside"),
        ("userId,movieId,rating,timestamp\n1,10,four,100\n", "non-numeric"),
        ("userId,movieId,rating,timestamp\n1,10,,100\n", "missing"),
        ("userId,movieId,score,timestamp\n1,10,4,100\n", "lacks column"),
        ("userId,movieId,rating,timestamp\n1,99,4.0,100\n", "missing from the item table"),
    ],
)
def test_malformed_ratings_file(env, monkeypatch, ratings, problem):
    digest = make_zip(env["official"] / "ml-latest-small.zip", ratings=ratings)
    set_official_sha(monkeypatch, digest)
    with pytest.raises(DataFormatError, match=problem):
        load_movielens()


def test_unknown_variant_and_dataset():
    with pytest.raises(ValueError, match="variant"):
        load_movielens("1m")
    with pytest.raises(KeyError):
        fetch("no-such-dataset")


def test_ml100k_layout(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    genres = "|".join(["0"] * 19)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("ml-100k/u.data", "1\t1\t5\t874965758\n2\t2\t3\t876893171\n")
        archive.writestr(
            "ml-100k/u.item",
            f"1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|{'|'.join(['0'] * 13)}\n"
            f"2|GoldenEye (1995)|01-Jan-1995||http://y|{genres}\n".encode("latin-1"),
        )
    path = tmp_path / "ml-100k.zip"
    path.write_bytes(buffer.getvalue())
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(
        download.REGISTRY, "ml-100k",
        Archive("ml-100k.zip", path.as_uri(), md5=hashlib.md5(buffer.getvalue()).hexdigest()),
    )
    data = load_movielens("100k")
    assert data.n_items == 2 and data.n_users == 2
    assert data.items.loc[0, "genres"] == "Animation|Children's|Comedy"


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints, computed independently of helpers.download."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_a_file_known_only_by_its_git_blob_id_is_verified_and_its_sha256_recorded(tmp_path, monkeypatch):
    official = tmp_path / "publisher"
    official.mkdir()
    content = b"1\t10\t4\n2\t10\t5\n"
    (official / "douban_movie_ratings.dat").write_bytes(content)
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    monkeypatch.setitem(download.REGISTRY, "douban-movie", Archive(
        "douban_movie_ratings.dat", (official / "douban_movie_ratings.dat").as_uri(), git_blob=git_blob_id(content)))
    path = fetch("douban-movie")
    assert path.read_bytes() == content
    assert hashlib.sha256(content).hexdigest() in download._recorded_path(path).read_text()
    assert fetch("douban-movie") == path  # the cached copy verifies again


def test_a_different_file_is_refused_against_the_git_blob_id(tmp_path, monkeypatch):
    official = tmp_path / "publisher"
    official.mkdir()
    (official / "douban_movie_ratings.dat").write_bytes(b"1\t10\t4\n")
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    expected = git_blob_id(b"something else\n")
    monkeypatch.setitem(download.REGISTRY, "douban-movie", Archive(
        "douban_movie_ratings.dat", (official / "douban_movie_ratings.dat").as_uri(), git_blob=expected))
    with pytest.raises(ChecksumError, match=f"git-blob:{expected}"):
        fetch("douban-movie")
    assert not (tmp_path / "cache" / "douban_movie_ratings.dat").exists()


def test_the_douban_movie_file_is_pinned_to_the_publishers_blob():
    spec = download.REGISTRY["douban-movie"]
    assert spec.git_blob == "0a944e57dc2107fb4ded66f9740f242c666e6949" and spec.official_checksum.startswith("git-blob:")


def test_a_fetch_waits_for_another_process_holding_the_archive(env):
    """Two notebooks or test workers fetching one archive take turns (an OS file lock), so neither
    reads a half-written file or deletes the other's partial download."""
    done = threading.Event()
    worker = threading.Thread(target=lambda: (fetch("ml-latest-small"), done.set()))
    with download.cache_lock("ml-latest-small.zip"):
        worker.start()
        assert not done.wait(0.5), "fetch did not wait for the lock"
    worker.join(30)
    assert done.is_set() and (env["cache"] / "ml-latest-small.zip").exists()


def test_concurrent_fetches_agree_and_leave_no_partial_files(env):
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(fetch("ml-latest-small"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 4 and len(set(results)) == 1
    assert download.file_digests(results[0])["sha256"] == env["sha256"]
    assert not any((env["cache"] / ".partial").rglob("*.zip"))


def test_a_busy_lock_names_its_holder_and_gives_up_at_its_deadline(env, capfd):
    """Another process holds the lock: the waiter says which process (id and command) and, past its
    deadline, raises naming it — never a silent wait."""
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", "from helpers import download\nwith download.cache_lock('busy.zip'):"
                               "\n    print('held', flush=True); input()", "holding-for-the-test"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(download.CacheLockTimeout, match=rf"busy.zip was still in use by process {holder.pid} "
                                                            r"\(.*holding-for-the-test\) after 1 s"):
            with download.cache_lock("busy.zip", wait=1):
                pass
        assert time.monotonic() - start < 10
        assert f"busy.zip is in use by process {holder.pid}" in capfd.readouterr().err
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with download.cache_lock("busy.zip", wait=1):  # its holder gone, the lock is free again
        pass


def test_taking_a_lock_this_thread_holds_raises_at_once(env):
    with download.cache_lock("twice.zip"):
        with pytest.raises(RuntimeError, match="already holds the cache lock .*would wait forever"):
            with download.cache_lock("twice.zip"):
                pass
    with download.cache_lock("twice.zip"):  # released after the outer block: free again
        pass


def test_a_silent_server_fails_the_download_at_its_timeout(env, monkeypatch):
    """A server that accepts the connection and never answers: the download fails after the socket
    timeout with the archive's how-to-get message, instead of waiting forever."""
    import socket
    import time

    monkeypatch.setattr(download, "DOWNLOAD_TIMEOUT_SECONDS", 1.0)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        monkeypatch.setenv(download.MIRROR_ENV, url)
        start = time.monotonic()
        with pytest.raises(DataUnavailableError, match="did not provide it"):
            fetch("ml-latest-small")
        assert time.monotonic() - start < 30
    assert socket.getdefaulttimeout() is None  # the process's other sockets are left as they were
