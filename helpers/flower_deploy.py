"""Lesson 11's launcher: a Flower SuperLink and N SuperNodes as real processes on this machine.

``with Deployment(federation, n_nodes=4) as flower: result = flower.run(settings)`` starts
``flower-superlink`` on a free loopback port, writes each node's users to its own data file,
starts one ``flower-supernode`` per file, waits until every node is online, runs the app in
``helpers/flower_app`` with ``flwr run`` and follows its progress; on leaving the block,
also after an error or Ctrl-C, every process is stopped and checked gone.

Everything of one deployment lives in a private folder (``home``): Flower's home
(``FLWR_HOME``: its config, installed apps), the nodes' data, certificates and keys, one log
per process and the ServerApp's progress file.

``secure=True`` serves TLS with a certificate authority made at start-up for 127.0.0.1;
``authenticate=True`` also turns on SuperNode authentication: each node gets an ECDSA key
pair, and the SuperLink accepts only nodes whose public key was registered
(``flwr supernode register``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from helpers import flower_rounds as fr
from helpers.fedcore import FedConfig
from helpers.privacy import DPConfig
from helpers.processes import PortInUse, Process, check_port_free, free_port, port_open, stop_all

APP_DIR = Path(__file__).parent / "flower_app"
CONNECTION = "course"  # the SuperLink connection's name in the deployment's Flower config


class FlowerError(RuntimeError):
    """Something went wrong in the Flower processes; the message quotes the relevant log."""


@dataclass(frozen=True)
class RunSettings:
    """One training run on Flower: ``rounds`` of lesson 03's FedAvg with ``config``, d = ``dim``,
    users' first values seeded by ``init_seed``. The ServerApp waits up to ``node_wait`` s for
    ``min_nodes`` nodes and ``round_timeout`` s for replies in a round. With ``dp``
    (:class:`helpers.privacy.DPConfig`) the run is DP-FedAvg as in lesson 10: users sampled
    with probability ``sampling_rate``, updates clipped on the nodes, noise added by the server."""

    rounds: int
    config: FedConfig
    dim: int = 32
    init_seed: int = 0
    min_nodes: int = 1
    round_timeout: float = 60.0
    node_wait: float = 60.0
    dp: DPConfig | None = None
    sampling_rate: float = 0.0

    def toml(self, events_file: Path) -> str:
        values = {"rounds": int(self.rounds), "dim": int(self.dim), "init-seed": int(self.init_seed),
                  "fed-config": json.dumps(dataclasses.asdict(self.config)), "min-nodes": int(self.min_nodes),
                  "round-timeout": float(self.round_timeout), "node-wait": float(self.node_wait),
                  "dp": json.dumps({**dataclasses.asdict(self.dp), "sampling_rate": self.sampling_rate}) if self.dp else "",
                  "events-file": str(events_file)}
        return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


@dataclass
class FlowerResult:
    """What a run on Flower produced (lists as in :func:`helpers.flower_rounds.progress_event`).

    ``seconds`` per round are measured by the ServerApp (messages included); ``wall_seconds``
    from ``flwr run`` to the last progress line; ``wire_bytes`` is the SuperLink's own count of
    the run's network traffic, both ways (``flwr ls``), framing and all.
    """

    run_id: str
    test_rmse: list
    train_rmse: list
    nodes_answered: list
    seconds: list
    bytes_down: list
    bytes_up: list
    trained: list
    wall_seconds: float
    wire_bytes: int | None = None
    status: str = ""


def flower_command(name: str) -> str:
    """Path of a Flower command (``flower-superlink``, ``flower-supernode``, ``flwr``) next to
    this Python, else on PATH; a clear error when Flower is not installed."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FlowerError(f"the Flower command {name!r} is missing: install the course's requirements "
                          "(`pip install -r requirements.txt`, which pins flwr) in the environment running this notebook")
    return found


def make_certificates(folder: Path) -> dict[str, Path]:
    """A certificate authority made now and a server certificate it signs for 127.0.0.1 and
    localhost (valid one day): {"ca": ca.crt, "cert": server.pem, "key": server.key}."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, public_key, signing_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "course loopback CA")])
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    ca_cert = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    server_cert = certificate(server_name, ca_name, server_key.public_key(), ca_key, ca=False)
    paths = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return paths


def make_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair for SuperNode authentication, OpenSSH format: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = folder / name, folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    private.chmod(0o600)
    return private, public


class Deployment:
    """A SuperLink and ``n_nodes`` SuperNodes on loopback, each node holding its share of
    ``federation``'s users (:func:`helpers.flower_rounds.write_partitions`). A context manager.

    Args:
        federation: the :class:`helpers.federated.Federation` whose users the nodes hold.
        n_nodes: SuperNodes to start.
        port: the SuperLink's port; None picks a free one (a taken port raises
            :class:`helpers.processes.PortInUse`).
        secure: TLS with certificates made at start-up; authenticate: SuperNode
            authentication (implies ``secure``: Flower requires TLS for it).
        keep: keep the deployment's folder (logs, data, keys) after closing.
    """

    def __init__(self, federation, n_nodes: int, port: int | None = None, secure: bool = False,
                 authenticate: bool = False, keep: bool = False, startup_timeout: float = 60.0):
        fr.node_users(federation.client_ids, n_nodes)  # checks n_nodes
        self.federation, self.n_nodes, self.keep = federation, int(n_nodes), keep
        self.secure, self.authenticate = secure or authenticate, authenticate
        self.requested_port, self.startup_timeout = port, startup_timeout
        self.superlink: Process | None = None
        self.nodes: dict[int, Process] = {}
        self.strangers: list[Process] = []  # nodes started without a registered key
        self.keys: dict[int, tuple[Path, Path]] = {}
        self.home: Path | None = None
        self.runs = 0

    # ------------------------------------------------------------ start and stop

    def __enter__(self) -> "Deployment":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Start the SuperLink and every node; return when all nodes are online."""
        for name in ("flower-superlink", "flower-supernode", "flwr"):
            flower_command(name)
        if self.requested_port is not None:
            check_port_free(self.requested_port)
        self.home = Path(tempfile.mkdtemp(prefix="course-flower-"))
        self.port = self.requested_port or free_port()
        self.partitions = fr.write_partitions(self.federation, self.n_nodes, self.home / "data")
        self.certificates = make_certificates(self.home / "certificates") if self.secure else None
        inherited = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "PY_COLORS")}
        self.env = {**inherited, "TERM": "dumb", "FLWR_HOME": str(self.home / "flwr"), "TF_CPP_MIN_LOG_LEVEL": "3",
                    "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore", "NO_COLOR": "1",
                    # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name
                    "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        self._write_connection()
        command = [flower_command("flower-superlink"), "--host", "127.0.0.1", "--port", str(self.port),
                   "--disable-runtime-dependency-installation"]
        if self.secure:
            command += ["--ssl-ca-certfile", str(self.certificates["ca"]), "--ssl-certfile",
                        str(self.certificates["cert"]), "--ssl-keyfile", str(self.certificates["key"])]
        else:
            command += ["--insecure"]
        if self.authenticate:
            command += ["--enable-supernode-auth"]
        self.superlink = Process("superlink", command, self.home / "logs" / "superlink.log", self.env)
        self._wait_for_superlink()
        for i in range(self.n_nodes):
            if self.authenticate:
                self.keys[i] = make_node_key(self.home / "keys", f"node-{i}")
                self.register(self.keys[i][1])
            self.start_node(i)
        self.wait_for_nodes(self.n_nodes)

    def _write_connection(self) -> None:
        config = self.home / "flwr" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        security = (f'root-certificates = "{self.certificates["ca"]}"' if self.secure else "insecure = true")
        config.write_text(f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
                          f'address = "127.0.0.1:{self.port}"\n{security}\n')

    def _wait_for_superlink(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not port_open(self.port):
            if not self.superlink.alive():
                log = self.superlink.log_tail()
                if "address already in use" in log.lower():
                    raise PortInUse(self.port)
                raise FlowerError(f"the SuperLink exited with code {self.superlink.popen.returncode} while starting; "
                                  f"its log ends:\n{log}")
            if time.monotonic() > deadline:
                raise FlowerError(f"the SuperLink did not listen on 127.0.0.1:{self.port} within "
                                  f"{self.startup_timeout:.0f} s; its log ends:\n{self.superlink.log_tail()}")
            time.sleep(0.2)

    def _node_command(self, partition: Path, key: Path | None, retries: int) -> list[str]:
        command = [flower_command("flower-supernode"), "--superlink", f"127.0.0.1:{self.port}",
                   "--port", str(free_port()), "--max-retries", str(retries), "--max-wait-time", "20",
                   "--node-config", f'partition-file="{partition}"']
        command += ["--root-certificates", str(self.certificates["ca"])] if self.secure else ["--insecure"]
        return command + (["--auth-supernode-private-key", str(key)] if key is not None else [])

    def start_node(self, i: int) -> Process:
        """Start SuperNode ``i`` (again, after :meth:`kill_node`) on its data file, signing in
        with its registered key when the deployment authenticates nodes."""
        if i in self.nodes and self.nodes[i].alive():
            raise FlowerError(f"node {i} is already running (process {self.nodes[i].pid})")
        command = self._node_command(self.partitions[i], self.keys[i][0] if i in self.keys else None, retries=3)
        self.nodes[i] = Process(f"node-{i}", command, self.home / "logs" / f"node-{i}.log", self.env)
        return self.nodes[i]

    def try_unregistered_node(self, timeout: float = 60.0) -> tuple[bool, str]:
        """Start a SuperNode with a fresh key that was never registered (the data of node 0) and
        wait until it gives up or ``timeout`` s pass. Returns (refused, the lines of its log
        that say why); refused means it exited without the SuperLink ever listing it online."""
        if not self.authenticate:
            raise FlowerError("this deployment accepts any node (authenticate=False): there is nothing to refuse")
        name = f"unregistered-{len(self.strangers)}"
        key, _ = make_node_key(self.home / "keys", name)
        online_before = self.online_nodes()
        node = Process(name, self._node_command(self.partitions[0], key, retries=2), self.home / "logs" / f"{name}.log",
                       self.env)
        self.strangers.append(node)
        deadline = time.monotonic() + timeout
        joined = False
        while node.alive() and time.monotonic() < deadline:
            joined = joined or self.online_nodes() > online_before
            time.sleep(1)
        refused = not node.alive() and not joined
        node.stop()
        reasons = [line.strip() for line in node.log_tail(20000).splitlines()
                   if any(word in line for word in ("Exit Code", "Failed", "[code:", "could not"))]
        return refused, "\n".join(dict.fromkeys(reasons))

    def kill_node(self, i: int) -> None:
        """Kill SuperNode ``i`` at once (SIGKILL, as a crash or a pulled plug), with its ClientApps."""
        left = self.nodes[i].stop(kill=True)
        if left:
            raise FlowerError(f"node {i} left processes {left} after SIGKILL")

    def close(self) -> None:
        """Stop every node and the SuperLink (and what they spawned); raise if a process is left."""
        left = stop_all(self._processes())
        if self.home is not None and not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)
        if left:
            raise FlowerError(f"processes left running after the deployment stopped: {left}")

    def _processes(self) -> list[Process]:
        return list(self.nodes.values()) + self.strangers + ([self.superlink] if self.superlink else [])

    def processes_left(self) -> list[int]:
        """Ids of live processes started by this deployment (after :meth:`close`: none)."""
        return [p.pid for process in self._processes() for p in process.family()]

    # ------------------------------------------------------------ the Flower CLI

    def cli(self, *args: str, timeout: float = 60.0) -> dict:
        """Run ``flwr <args> --format json`` against this deployment; its JSON answer."""
        command = [flower_command("flwr"), *args, "--format", "json"]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=self.home)
        try:
            text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # a kernel may ask for colours: drop them
            answer = json.loads(text[text.find("{"):])
        except json.JSONDecodeError:
            raise FlowerError(f"`flwr {' '.join(args)}` did not answer in JSON (exit code {done.returncode}):\n"
                              f"{done.stdout[-2000:]}{done.stderr[-2000:]}") from None
        if not answer.get("success", False):
            raise FlowerError(f"`flwr {' '.join(args)}` failed: {answer.get('error-message', answer)}")
        return answer

    def register(self, public_key: Path) -> None:
        """Put a node's public key on the SuperLink's list of accepted nodes."""
        self.cli("supernode", "register", str(public_key), CONNECTION)

    def online_nodes(self) -> int:
        """Nodes the SuperLink lists as online."""
        nodes = self.cli("supernode", "list", CONNECTION).get("nodes", [])
        return sum(node.get("status") == "online" for node in nodes)

    def wait_for_nodes(self, count: int, timeout: float | None = None) -> None:
        """Return when ``count`` nodes are online; a node that exits or a timeout raises with its log."""
        deadline = time.monotonic() + (timeout or self.startup_timeout)
        while self.online_nodes() < count:
            for i, node in self.nodes.items():
                if not node.alive():
                    raise FlowerError(f"SuperNode {i} exited with code {node.popen.returncode} before joining; "
                                      f"its log ends:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise FlowerError(f"fewer than {count} SuperNodes came online within "
                                  f"{timeout or self.startup_timeout:.0f} s")
            time.sleep(0.5)

    # ------------------------------------------------------------ a run

    def run(self, settings: RunSettings, timeout: float = 1800.0, on_progress=None, progress: bool = False,
            desc: str = "Flower rounds", during=None) -> FlowerResult:
        """Run the app with ``settings``; return its :class:`FlowerResult` when the ServerApp is done.

        ``on_progress(event)`` gets each progress line (:func:`helpers.flower_rounds.progress_event`);
        ``during(deployment, rounds_done)`` is called as rounds complete (e.g. to kill a node).
        A failure inside the ServerApp raises :class:`FlowerError` with its traceback; so do a
        dead SuperLink and a run that takes longer than ``timeout`` s (the run is stopped).
        """
        from helpers.progress import progress as progress_bar

        self.runs += 1
        events = self.home / f"events-{self.runs}.jsonl"
        config_file = self.home / f"run-{self.runs}.toml"
        config_file.write_text(settings.toml(events))
        start = time.monotonic()
        run_id = str(self.cli("run", str(APP_DIR), CONNECTION, "--run-config", str(config_file))["run-id"])
        seen, last, rounds_done = 0, None, 0
        bar = iter(progress_bar(range(settings.rounds), desc, enabled=progress))  # one step per round done
        try:
            while True:
                lines = fr.read_events(events)
                for event in lines[seen:]:
                    if event["event"] == "error":
                        raise FlowerError(f"the ServerApp of run {run_id} failed:\n{event['traceback']}")
                    if event["event"] == "progress":
                        last = event
                        if on_progress:
                            on_progress(event)
                        while rounds_done < len(event["seconds"]):
                            rounds_done += 1
                            next(bar, None)
                            if during:
                                during(self, rounds_done)
                seen = len(lines)
                if lines and lines[-1]["event"] == "done":
                    for _ in bar:  # rounds that did not report (none expected): the bar ends with its summary line
                        pass
                    break
                if not self.superlink.alive():
                    raise FlowerError(f"the SuperLink died during run {run_id}; its log ends:\n{self.superlink.log_tail()}")
                if time.monotonic() - start > timeout:
                    self.cli("stop", run_id, CONNECTION)
                    raise FlowerError(f"run {run_id} did not finish within {timeout:.0f} s (stopped)")
                time.sleep(0.25)
        finally:
            bar.close()
        wall = time.monotonic() - start
        status, wire = self.run_status(run_id)
        return FlowerResult(run_id, last["test_rmse"], last["train_rmse"], last["nodes_answered"], last["seconds"],
                            last["bytes_down"], last["bytes_up"], last["trained"], wall, wire, status)

    def run_status(self, run_id: str, timeout: float = 30.0) -> tuple[str, int | None]:
        """(status, network bytes both ways) of a run as the SuperLink reports it, once it has finished."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.cli("list", CONNECTION, "--run-id", run_id).get("runs", [])
            run = runs[0] if runs else {}
            if str(run.get("status", "")).startswith("finished") or time.monotonic() > deadline:
                return run.get("status", "unknown"), run.get("network-traffic", {}).get("total-bytes")
            time.sleep(0.5)


def side_by_side(result: FlowerResult, history) -> dict:
    """The Flower run next to the in-process run of the same settings (a
    :class:`helpers.fedcore.History` from :func:`helpers.federated.train_federated`).

    Returns final test RMSE of each, their relative difference |a − b| / b, the largest
    difference along the curve, mean seconds per round of each, and MB per round: the
    simulation's model of the traffic (rows each user rated, both ways), Flower's payloads
    (the whole item table to every node, the sampled users' rows back) and Flower's wire
    count (the SuperLink's total for the run — the first query and the final evaluation
    included — divided by the rounds). 1 MB = 10⁶ bytes.
    """
    rounds = len(result.seconds)
    if rounds != len(history.reports):
        raise ValueError(f"the Flower run has {rounds} rounds, the in-process run {len(history.reports)}")
    flower, local = np.asarray(result.test_rmse), np.asarray(history.test_rmse)
    return {"rounds": rounds, "final_rmse_flower": float(flower[-1]), "final_rmse_in_process": float(local[-1]),
            "relative_difference": float(abs(flower[-1] - local[-1]) / local[-1]),
            "max_curve_difference": float(np.max(np.abs(flower - local))),
            "seconds_per_round_flower": float(np.mean(result.seconds)),
            "seconds_per_round_in_process": float(np.mean([r.seconds for r in history.reports])),
            "mb_per_round_in_process": float(np.mean([r.bytes_down + r.bytes_up for r in history.reports]) / 1e6),
            "mb_per_round_flower_payload": float(np.mean(np.add(result.bytes_down, result.bytes_up)) / 1e6),
            "mb_per_round_flower_wire": None if result.wire_bytes is None else result.wire_bytes / rounds / 1e6}
