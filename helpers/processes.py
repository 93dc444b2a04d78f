"""Processes the course starts (Flower's SuperLink and SuperNodes, JupyterLab in tests): loopback
ports chosen free at run time, one session per process so it stops with everything it spawned."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import subprocess
from pathlib import Path

import psutil


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_port_free(port: int) -> None:
    """Raise :class:`PortInUse` if something already listens on 127.0.0.1:``port``."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise PortInUse(port) from None
            raise


def port_open(port: int) -> bool:
    """True when a server accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", int(port))) == 0


class PortInUse(OSError):
    """A port the course wanted to listen on is taken."""

    def __init__(self, port: int):
        users = []
        with contextlib.suppress(psutil.Error):
            users = [f"{c.pid} ({psutil.Process(c.pid).name()})" for c in psutil.net_connections("tcp")
                     if c.laddr and c.laddr.port == int(port) and c.status == psutil.CONN_LISTEN and c.pid]
        who = f" by process {', '.join(users)}" if users else ""
        super().__init__(errno.EADDRINUSE, f"port {port} on 127.0.0.1 is already in use{who}; "
                                           "choose another port or leave it unset to get a free one")
        self.port = port


class Process:
    """A command run in its own session with its output in ``log``; :meth:`stop` ends it and
    every process it started (they share its session)."""

    def __init__(self, name: str, command: list[str], log: Path, env: dict | None = None):
        self.name, self.command, self.log = name, command, Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the process's output."""
        text = self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""
        return re.sub(r"\x1b\[[0-9;]*m", "", text)  # without terminal colours

    def family(self) -> list[psutil.Process]:
        """Every live process it started: its descendants (also those that moved to a session of
        their own, as Flower's SuperExec does) and orphans left in its session."""
        found = {}
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for process in [root, *root.children(recursive=True)]:
                found[process.pid] = process
        for process in psutil.process_iter(["pid"]):
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(process.pid) in (self.pid, *found):
                    found[process.pid] = process
        alive = []
        for process in found.values():
            with contextlib.suppress(psutil.Error):
                if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
        return alive

    def stop(self, kill: bool = False, timeout: float = 10.0) -> list[int]:
        """SIGTERM (SIGKILL if ``kill``) to it and its family, SIGKILL to whatever is left after
        ``timeout`` s; returns the ids of processes still alive afterwards (none expected)."""
        return stop_all([self], kill, timeout)


def stop_all(processes: list[Process], kill: bool = False, timeout: float = 10.0) -> list[int]:
    """Stop several :class:`Process` es and their families at once (signals first, then one wait);
    returns the ids of processes still alive afterwards (none expected)."""
    family = [member for process in processes for member in process.family()]
    for member in family:
        with contextlib.suppress(psutil.Error):
            member.kill() if kill else member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.Error):
            member.kill()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=timeout)
    _, alive = psutil.wait_procs(alive + [m for process in processes for m in process.family()], timeout=5)
    return [p.pid for p in alive]
