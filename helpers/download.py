"""Fetch a dataset archive into the course's cache, verified by checksum.

One registry maps each archive to its official URL and checksum (as in d2l's
``DATA_HUB``). :func:`fetch` returns the local path of a verified archive:

1. An archive already in the cache (``data/`` at the project root) is used when its
   hash is the official one, or the one recorded when it was first accepted — unless a
   mirror is set whose ``SHA256SUMS`` lists another build of it (the full CIFAR-10
   rebuild after the subset, say): then the mirror's build replaces it.
2. Otherwise it is downloaded with :func:`keras.utils.get_file` from the official
   URL, or from ``$COURSE_DATA_MIRROR`` when that is set (a directory, or a
   ``file://`` / ``http(s)://`` base URL holding the same file names).
3. A mirror may hold another build of an archive (a re-zip, a subset). It is
   accepted only when its sha256 is listed in the mirror's ``SHA256SUMS`` file, and
   the function says so. Any other hash mismatch deletes the download and raises
   :class:`ChecksumError`, naming the file and both hashes.
4. When nothing can be reached, :class:`DataUnavailableError` says how to get it.

Two processes that need the same archive at once (two notebooks, parallel tests) take
turns: :func:`cache_lock` holds a lock file in the cache while one of them fetches; the other
says which process it waits for, and gives up at a deadline. Downloads time out when the
server stops sending (:data:`DOWNLOAD_TIMEOUT_SECONDS`).

An archive whose publisher gives only a git blob id (Douban movie, from the tree of the
pinned GA-DTCDR commit) is verified against that id; its sha256 is then recorded beside
the cached copy. An archive with no known checksum at all would be trusted on first use:
the sha256 of the first download is recorded and enforced afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from helpers.paths import course_root

MIRROR_ENV = "COURSE_DATA_MIRROR"
CACHE_ENV = "COURSE_DATA_DIR"
SUMS_FILE = "SHA256SUMS"


class DataUnavailableError(RuntimeError):
    """No copy of an archive could be found in the cache, the mirror or online."""


class ChecksumError(RuntimeError):
    """An archive's bytes do not match any hash the course accepts for it."""


@dataclass(frozen=True)
class Archive:
    """One downloadable file.

    Attributes:
        filename: the official file name, also used in the cache and in mirrors.
        url: the official download URL.
        sha256: the official sha256 in hex, if known.
        md5: the official md5 in hex, used when no sha256 is published.
        git_blob: the file's git blob id (sha1 of ``"blob <size>\\0"`` + bytes) in the publisher's
            repository at the pinned commit, used when neither sha256 nor md5 is published.
        size: the official size in bytes, if known (shown in messages only).
    """

    filename: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    git_blob: str | None = None

    def matches_official(self, digests: dict[str, str]) -> bool:
        """True when ``digests`` (algorithm -> hex) equal a published checksum."""
        if self.sha256 is not None:
            return digests["sha256"] == self.sha256
        if self.md5 is not None:
            return digests["md5"] == self.md5
        return self.git_blob is not None and digests["git_blob"] == self.git_blob

    @property
    def official_checksum(self) -> str:
        """The published checksum as ``"algo:hex"``, or ``"unknown"``."""
        if self.sha256:
            return f"sha256:{self.sha256}"
        if self.md5:
            return f"md5:{self.md5}"
        return f"git-blob:{self.git_blob}" if self.git_blob else "unknown"


_GA_DTCDR = (
    "https://raw.githubusercontent.com/fengzhu1/GA-DTCDR/"
    "11a1dc6fda5148c8b1ce412ed4e2f0c4f124e2d0/Data"
)

REGISTRY: dict[str, Archive] = {
    "ml-latest-small": Archive(
        "ml-latest-small.zip",
        "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
        sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
        size=978_202,
    ),
    "ml-100k": Archive(
        "ml-100k.zip",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        size=4_924_029,
    ),
    "cifar-10": Archive(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        size=170_498_071,
    ),
    "lastfm-2k": Archive(
        "hetrec2011-lastfm-2k.zip",
        "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        sha256="6738f48195667ff03caaab4d32ca9a3133d8cc026b7c3cdaf6ce1010e913c59c",
    ),
    "douban-book": Archive(
        "douban_book_ratings.dat",
        f"{_GA_DTCDR}/douban_book/ratings.dat",
        sha256="cc1c191fabe2e05e95cd6dbe7be19d13ed3e1b27b80be2050e4f6b4e40945ddd",
        size=1_116_081,
    ),
    "douban-music": Archive(
        "douban_music_ratings.dat",
        f"{_GA_DTCDR}/douban_music/ratings.dat",
        sha256="40944be25f79e6cf80ab9acf0dca8f4b9b9fe2724a068702294608883ad46775",
        size=811_063,
    ),
    "douban-movie": Archive(
        "douban_movie_ratings.dat",
        f"{_GA_DTCDR}/douban_movie/ratings.dat",
        # The repository's tree at the pinned commit names this blob; its bytes are not in the
        # development mirror, so the file is verified by the blob id (and its sha256 is then
        # recorded beside the cached copy by fetch()).
        git_blob="0a944e57dc2107fb4ded66f9740f242c666e6949",
    ),
}


def cache_dir() -> Path:
    """The download cache: ``$COURSE_DATA_DIR`` if set (a relative one from the course root), else ``data/``
    in the course root (:func:`helpers.paths.course_root`)."""
    return course_root() / (os.environ.get(CACHE_ENV) or "data")  # an absolute $COURSE_DATA_DIR stays as it is


class CacheLockTimeout(TimeoutError):
    """A cache entry stayed locked by another process past the wait's deadline."""


LOCK_WAIT_SECONDS = 1800.0  # how long a busy cache entry is waited for (a source model trains for minutes)
DOWNLOAD_TIMEOUT_SECONDS = 60.0  # a download whose server sends nothing for this long fails
_held_locks = threading.local()  # the lock files this thread holds (re-entry would wait forever)


def _try_lock(handle) -> bool:
    """Take the exclusive lock on ``handle`` without waiting; False when another holder has it."""
    try:
        if os.name == "nt":
            import msvcrt
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(handle) -> None:
    if os.name == "nt":
        import msvcrt
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def lock_holder(path: Path) -> str:
    """Who holds the lock file at ``path``, as its holder wrote it: ``"process 4242 (python -m …)"``."""
    import psutil

    try:
        pid = int(path.read_text(errors="replace").split(maxsplit=1)[0])
        command = " ".join(" ".join(psutil.Process(pid).cmdline()).split())[:240]  # one line
    except (OSError, ValueError, IndexError, psutil.Error):
        return "another process (it has not said which)"
    return f"process {pid} ({command})"


@contextlib.contextmanager
def cache_lock(name: str, wait: float | None = None):
    """Hold an exclusive inter-process lock on cache entry ``name`` (``<cache>/.locks/<name>.lock``).

    Tries without waiting first. When another process (or another thread) holds it, says on stderr
    who — its process id and command, which the holder writes into the lock file — and waits up to
    ``wait`` s (default :data:`LOCK_WAIT_SECONDS`), then raises :class:`CacheLockTimeout` naming the
    holder. Taking a lock this thread already holds raises RuntimeError at once (it would wait
    forever). The operating system releases the lock when its holder exits, so a crashed process
    never leaves a stale lock.
    """
    folder = cache_dir() / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.lock"
    held = _held_locks.__dict__.setdefault("paths", set())
    if path.resolve() in held:
        raise RuntimeError(f"this process ({os.getpid()}) already holds the cache lock {path}; taking it "
                           f"again would wait forever (a call inside another that locks {name!r})")
    wait = LOCK_WAIT_SECONDS if wait is None else wait
    with open(path, "a+b") as handle:
        if not _try_lock(handle):
            holder = lock_holder(path)
            print(f"{name} is in use by {holder}; waiting up to {wait:.0f} s for it to finish …",
                  file=sys.stderr, flush=True)
            deadline = time.monotonic() + wait
            while not _try_lock(handle):
                if time.monotonic() > deadline:
                    raise CacheLockTimeout(
                        f"{name} was still in use by {lock_holder(path)} after {wait:.0f} s. If that process "
                        f"is stuck, end it and run again; the lock is released when its holder exits.")
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()} {' '.join(sys.argv)[:200]}\n".encode())
        handle.flush()
        held.add(path.resolve())
        try:
            yield
        finally:
            held.discard(path.resolve())
            _unlock(handle)


def mirror_base() -> str | None:
    """``$COURSE_DATA_MIRROR`` as a base URL ending in ``/``, or None when unset.

    A plain directory path is turned into a ``file://`` URL; a relative path is taken
    from the project root (so ``../course-archives`` means the same thing in a shell
    at the root and in a notebook kernel running in ``notebooks/``).
    """
    raw = os.environ.get(MIRROR_ENV, "").strip()
    if not raw:
        return None
    if urllib.parse.urlsplit(raw).scheme in ("file", "http", "https"):
        url = raw
    else:
        url = (course_root() / Path(raw).expanduser()).resolve().as_uri()
    return url if url.endswith("/") else url + "/"


def file_digests(path: Path) -> dict[str, str]:
    """sha256, md5 and git blob id of a file, as ``{"sha256": hex, "md5": hex, "git_blob": hex}``.

    The git blob id is what ``git hash-object`` prints: sha1 of ``b"blob <size>\\0"`` + the bytes.
    """
    sha, md5 = hashlib.sha256(), hashlib.md5()
    blob = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
            md5.update(block)
            blob.update(block)
    return {"sha256": sha.hexdigest(), "md5": md5.hexdigest(), "git_blob": blob.hexdigest()}


def _read_text(url: str, timeout: float = 10.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except (OSError, ValueError):
        return None


def mirror_sums(base: str) -> dict[str, str]:
    """The ``SHA256SUMS`` listing at a mirror root: file name -> sha256 (empty if none)."""
    text = _read_text(base + SUMS_FILE) or ""
    sums = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def _recorded_path(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _recorded_hash(target: Path) -> str | None:
    record = _recorded_path(target)
    return record.read_text().split()[0] if record.exists() else None


def _how_to_get(spec: Archive, target: Path) -> str:
    return (
        f"To get {spec.filename}, do one of:\n"
        f"  - connect to the internet (it is downloaded from {spec.url});\n"
        f"  - set {MIRROR_ENV} to a folder or URL that holds {spec.filename}: a folder of "
        f"archives (a USB stick: {MIRROR_ENV}=/media/usb/course-archives) or your teacher's "
        f"mirror ({MIRROR_ENV}=http://<teacher's address>:8765/, see the README);\n"
        f"  - download {spec.url} yourself and save it as {target}."
    )


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Sockets opened inside time out after ``seconds`` of silence (Keras' ``get_file`` takes no
    timeout of its own, so a server that stops answering would otherwise hold a download forever)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(url: str, filename: str, into: Path) -> Path:
    """Download ``url`` with Keras into ``into/.partial/filename/filename``; return that path."""
    import helpers.tf_quiet  # noqa: F401  (keras needs TensorFlow; loaded here, on first download, quietly)
    from keras.utils import get_file

    partial = into / ".partial" / filename
    partial.mkdir(parents=True, exist_ok=True)
    # A copy from a local mirror folder is instant; Keras would print this machine's path and a
    # progress bar for it. Downloads from the web keep Keras' progress bar.
    quiet = contextlib.redirect_stdout(io.StringIO()) if url.startswith("file:") else contextlib.nullcontext()
    try:
        with quiet, _socket_timeout(DOWNLOAD_TIMEOUT_SECONDS):
            return Path(
                get_file(
                    fname=filename,
                    origin=url,
                    cache_dir=str(into),
                    cache_subdir=str(Path(".partial") / filename),
                    force_download=True,
                )
            )
    except Exception as error:  # Keras wraps URL errors in a bare Exception
        shutil.rmtree(partial, ignore_errors=True)
        raise DataUnavailableError(f"could not download {url}: {error}") from error


def _portable_source(url: str) -> str:
    """Where an archive came from, without this machine's folders: a web address stays as it
    is; a local mirror folder is named by its role (its path differs on every laptop)."""
    if url.startswith("file:"):
        return f"a local mirror folder ({MIRROR_ENV})"
    return url


def fetch(name: str, *, verbose: bool = True) -> Path:
    """Return the path of a verified copy of archive ``name`` (a key of REGISTRY).

    Args:
        name: dataset key, for example ``"ml-latest-small"``.
        verbose: print which file was used when it is not the official release.

    Returns:
        Path to the archive in the cache directory.

    Raises:
        KeyError: unknown dataset name.
        ChecksumError: the cached or downloaded bytes are not an accepted build.
        DataUnavailableError: neither the cache, the mirror nor the official URL has it.
    """
    if name not in REGISTRY:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)}")
    with cache_lock(REGISTRY[name].filename):
        return _fetch_unlocked(REGISTRY[name], verbose)


def _fetch_unlocked(spec: Archive, verbose: bool) -> Path:
    """:func:`fetch` for one archive, with its cache lock held."""
    cache = cache_dir()
    target = cache / spec.filename

    base = mirror_base()
    if target.exists():
        digests = file_digests(target)
        if spec.matches_official(digests):
            return target
        listed = mirror_sums(base).get(spec.filename) if base else None
        if listed is not None and listed != digests["sha256"]:
            if verbose:
                print(f"The cached {spec.filename} (sha256 {digests['sha256'][:12]}…) is not the build "
                      f"the mirror lists ({listed[:12]}…); replacing it with the mirror's.")
        elif digests["sha256"] == _recorded_hash(target):
            if verbose:
                source = _recorded_path(target).read_text().split()[-1]
                print(f"Using the cached {spec.filename}: not the official release; accepted from "
                      f"{_portable_source(source)} (sha256 {digests['sha256'][:12]}…).")
            return target
        else:
            raise ChecksumError(
                f"{target} is in the cache but is not an accepted build of {spec.filename}: "
                f"expected {spec.official_checksum}"
                + (f" or sha256:{_recorded_hash(target)}" if _recorded_hash(target) else "")
                + f", got sha256:{digests['sha256']}. "
                f"Delete it (it is corrupt or partial) and run again to re-download."
            )

    url = base + spec.filename if base else spec.url
    try:
        downloaded = _download(url, spec.filename, cache)
    except DataUnavailableError as error:
        where = f"the mirror {MIRROR_ENV}={os.environ[MIRROR_ENV]}" if base else "the official URL"
        raise DataUnavailableError(
            f"{spec.filename} is not in the cache ({cache}) and {where} did not provide it "
            f"({error}).\n{_how_to_get(spec, target)}"
        ) from error

    digests = file_digests(downloaded)
    listed = mirror_sums(base).get(spec.filename) if base else None
    if spec.matches_official(digests) and (spec.sha256 or spec.md5):
        note = None
    elif spec.matches_official(digests):  # verified by the publisher's git blob id: record the sha256 too
        note = (f"Verified {spec.filename} by its git blob id {spec.git_blob} (the publisher's repository at the "
                f"pinned commit); its sha256 {digests['sha256']} is recorded beside the cached copy.")
    elif listed is not None and listed == digests["sha256"]:
        note = (
            f"Using {spec.filename} from {_portable_source(url)}: a build that differs from the "
            f"official release ({spec.official_checksum}); accepted because the mirror's "
            f"{SUMS_FILE} lists its sha256 {digests['sha256']}."
        )
    elif spec.official_checksum == "unknown":
        note = (
            f"No official checksum is published for {spec.filename}; recorded the sha256 of "
            f"this first download ({digests['sha256']}) and will insist on it from now on."
        )
    else:
        shutil.rmtree(downloaded.parent, ignore_errors=True)
        expected = spec.official_checksum + (f" (or sha256:{listed} per {SUMS_FILE})" if listed else "")
        raise ChecksumError(
            f"checksum mismatch for {spec.filename} from {url}: expected {expected}, "
            f"got sha256:{digests['sha256']}. The bad download was deleted."
        )
    cache.mkdir(parents=True, exist_ok=True)
    os.replace(downloaded, target)
    shutil.rmtree(downloaded.parent, ignore_errors=True)  # this archive's partial-download folder
    if note is not None:
        _recorded_path(target).write_text(f"{digests['sha256']}  {url}\n")
        if verbose:
            print(note)
    return target


def reachable(url: str, timeout: float = 5.0) -> bool:
    """True when ``url`` answers (a HEAD request; a ``file:`` URL must exist). Looks, does not download."""
    request = urllib.request.Request(url, method="HEAD") if not url.startswith("file:") else url
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def is_available(name: str) -> bool:
    """True when archive ``name`` is cached, in the mirror, or reachable online.

    Used to decide whether data-dependent tests can run. Looks, does not download.
    """
    spec = REGISTRY[name]
    if (cache_dir() / spec.filename).exists():
        return True
    base = mirror_base()
    return reachable(base + spec.filename if base else spec.url)
