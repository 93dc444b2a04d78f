"""A classroom data mirror: fill the cache once, then serve it to the room over HTTP.

On the teacher's laptop::

    python -m helpers.data download-all                 # every archive, verified, into data/
    python -m helpers.data serve --bind 0.0.0.0 --port 8765

and on each student's laptop ``COURSE_DATA_MIRROR=http://teacher-laptop:8765/``.

The server is read-only (GET and HEAD), serves only the course's archive files that are
in the cache plus a ``SHA256SUMS`` listing computed from them, and answers 404 to any
other path — ``../``, absolute paths, encoded dots and sub-folders included — so nothing
outside the cache can be requested. It binds to loopback unless told otherwise.
"""

from __future__ import annotations

import http.server
import sys
import threading
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

from helpers import download
from helpers.download import REGISTRY, SUMS_FILE, ChecksumError, DataUnavailableError, cache_dir, fetch, file_digests
from helpers.progress import progress


def download_all(names: list[str] | None = None) -> dict[str, str]:
    """Fetch and verify every archive of the course (or ``names``); name → ``"ok"`` or the reason it failed.

    Nothing is raised: a teacher gets the whole picture in one run.
    """
    names = list(REGISTRY) if names is None else names
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown dataset(s) {unknown}; known: {sorted(REGISTRY)}")
    outcome = {}
    for name in progress(names, "archives"):
        try:
            fetch(name, verbose=False)
            outcome[name] = "ok"
        except (DataUnavailableError, ChecksumError) as error:
            outcome[name] = str(error).splitlines()[0]
    return outcome


def servable_files(root: Path) -> dict[str, Path]:
    """The files the mirror may serve: the course's archive names present in ``root``."""
    return {spec.filename: root / spec.filename for spec in REGISTRY.values() if (root / spec.filename).is_file()}


def sums_listing(files: dict[str, Path]) -> str:
    """``SHA256SUMS`` text for ``files`` (``<sha256>  <name>`` per line, sorted by name)."""
    return "".join(f"{file_digests(path)['sha256']}  {name}\n" for name, path in sorted(files.items()))


def requested_name(raw_path: str) -> str | None:
    """The single file name a request asks for, or None for anything else.

    Only ``/<name>`` with a plain name (no slash, backslash, ``..`` or NUL after decoding,
    query strings ignored) counts; every other form is refused before the disk is touched.
    """
    path = urllib.parse.unquote(urllib.parse.urlsplit(raw_path).path)
    if not path.startswith("/"):
        return None
    name = path[1:]
    if not name or "/" in name or "\\" in name or "\0" in name or name in (".", "..") or name.startswith("."):
        return None
    return name


def _handler(root: Path):
    files = servable_files(root)
    listing = sums_listing(files).encode()

    class MirrorHandler(http.server.BaseHTTPRequestHandler):
        server_version = "CourseMirror/1"
        timeout = 60  # s: a student laptop that connects and then sends nothing frees its thread

        def _answer(self, with_body: bool):
            name = requested_name(self.path)
            if name == SUMS_FILE:
                body, length = listing, len(listing)
            elif name in files:
                body, length = None, files[name].stat().st_size
            else:
                self.send_error(404, "not in this course mirror")
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/plain" if name == SUMS_FILE else "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if not with_body:
                return
            if body is not None:
                self.wfile.write(body)
                return
            with open(files[name], "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    self.wfile.write(block)

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._answer(with_body=True)

        def do_HEAD(self):  # noqa: N802
            self._answer(with_body=False)

        def log_message(self, format, *args):  # one quiet line per request, on stderr
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    return MirrorHandler


def make_server(root: Path | None = None, bind: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    """A mirror server for ``root`` (default: the cache) on ``bind:port`` (0 = a free port).

    Raises:
        FileNotFoundError: ``root`` holds none of the course's archives.
        OSError: the port is taken (the message says which and what to do).
    """
    root = Path(root) if root is not None else cache_dir()
    if not servable_files(root):
        raise FileNotFoundError(f"{root} holds none of the course's archives; run `python -m helpers.data download-all` first")
    try:
        return http.server.ThreadingHTTPServer((bind, port), _handler(root))
    except OSError as error:
        raise OSError(f"cannot serve on {bind}:{port} ({error.strerror or error}); "
                      f"choose another --port, or 0 for any free one") from error


@contextmanager
def serving(root: Path | None = None, bind: str = "127.0.0.1", port: int = 0):
    """Run a mirror in a background thread; yields its base URL and always shuts it down."""
    server = make_server(root, bind, port)
    thread = threading.Thread(target=server.serve_forever, name="course-mirror", daemon=True)
    thread.start()
    try:
        host, bound_port = server.server_address[:2]
        yield f"http://{host}:{bound_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def serve(root: Path | None = None, bind: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until interrupted (Ctrl-C), then shut down cleanly."""
    server = make_server(root, bind, port)
    host, bound_port = server.server_address[:2]
    files = servable_files(Path(root) if root is not None else cache_dir())
    print(f"Serving {len(files)} archive(s) read-only at http://{host}:{bound_port}/ — on each student laptop set "
          f"{download.MIRROR_ENV}=http://<this laptop's address>:{bound_port}/ (Ctrl-C stops).", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
