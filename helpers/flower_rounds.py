"""Lesson 11's federated MF as messages between a server and nodes — lesson 03's maths, unchanged.

On Flower, a **node** (a SuperNode) holds a partition of the MovieLens users: their training
and test ratings (a file on the node's own disk, :func:`write_partitions`) and, between
rounds, their private vectors p_u and biases b_u. The **server** (the ServerApp) holds the
item table and runs :func:`helpers.fedcore.run_round` — the same round as every simulation of
the course. Only step (2) differs: :class:`NodeFederation`, the server's view of the nodes,
trains the sampled users by sending each node one message and reading its reply.

One message per node per round (R rounds, then one more to evaluate the final table):

- server → node: the item table θ_t, (I, d + 1) float32, and the ids of the node's users
  sampled this round (possibly none); the round t, μ and the :class:`FedConfig` as settings.
- node → server: (a) Σ(r − r̂)² and the number of ratings, on its users' test and training
  ratings, with θ_t and their current private values — the evaluation "after t rounds";
  (b) the sampled users' updates Δ, exactly what :func:`helpers.federated.local_training`
  returns (clients, n_k, slot, rows, values).

The server pools the errors, RMSE = √(Σ sums / Σ counts), without seeing a rating, and μ once
at the start from each node's (Σ ratings, count). Everything here is numpy; a :class:`Link`
carries the messages: :class:`LocalLink` calls nodes in this process (tests), the ServerApp
in ``helpers/flower_app`` implements it over Flower's grid.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import federated as fl
from helpers.fedcore import FedConfig, ServerState, Updates

PARTITION_ARRAYS = ("train_user", "train_item", "train_rating", "test_user", "test_item", "test_rating",
                    "n_users", "n_items")


# ---------------------------------------------------------------- the nodes' data


def node_users(client_ids: np.ndarray, n_nodes: int) -> list[np.ndarray]:
    """Users of each node: client_ids[i::n_nodes] for node i (dealt round-robin, so every node
    gets about N / n_nodes users, light and heavy raters alike)."""
    if int(n_nodes) != n_nodes or not 1 <= n_nodes <= len(client_ids):
        raise ValueError(f"number of nodes must be a whole number from 1 to {len(client_ids)} (the users), got {n_nodes}")
    return [np.asarray(client_ids)[i::int(n_nodes)] for i in range(int(n_nodes))]


def write_partitions(federation: fl.Federation, n_nodes: int, folder: Path) -> list[Path]:
    """One ``node-<i>.npz`` per node in ``folder`` with its users' training and test ratings
    (user, item, rating columns) and the index-space sizes; returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, users in enumerate(node_users(federation.client_ids, n_nodes)):
        arrays = {"n_users": np.int64(federation.n_users), "n_items": np.int64(federation.n_items)}
        for name, frame in (("train", federation.train), ("test", federation.test)):
            mine = frame[frame["user_idx"].isin(users)]
            arrays[f"{name}_user"] = mine["user_idx"].to_numpy(np.int64)
            arrays[f"{name}_item"] = mine["item_idx"].to_numpy(np.int64)
            arrays[f"{name}_rating"] = mine["rating"].to_numpy(np.float32)
        paths.append(folder / f"node-{i}.npz")
        np.savez(paths[-1], **arrays)
    return paths


def load_partition(path: Path) -> fl.Federation:
    """A node's :class:`helpers.federated.Federation` from its file (μ is NaN until the server sends it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"node data file {path} does not exist (the launcher writes one per node)")
    with np.load(path) as saved:
        missing = [name for name in PARTITION_ARRAYS if name not in saved.files]
        if missing:
            raise ValueError(f"{path} is not a node data file written by write_partitions: it lacks {', '.join(missing)}")
        frames = {name: pd.DataFrame({"user_idx": saved[f"{name}_user"], "item_idx": saved[f"{name}_item"],
                                      "rating": saved[f"{name}_rating"]}) for name in ("train", "test")}
        return fl.Federation(frames["train"], frames["test"], int(saved["n_users"]), int(saved["n_items"]), mu=float("nan"))


# ---------------------------------------------------------------- messages


@dataclass
class Request:
    """What the server sends a node in round t: θ_t (I, d + 1) float32, the node's sampled user
    ids (m,) int64 (possibly empty), μ, the settings, and the seed of the users' first private
    values (used by a node the first time it is asked) and, for DP-FedAvg, the clipping norm C
    each user's update is clipped to on the node before it is sent (0: no clipping)."""

    table: np.ndarray
    clients: np.ndarray
    round: int
    mu: float
    config: FedConfig
    init_seed: int = 0
    clip_norm: float = 0.0

    def arrays(self) -> list[np.ndarray]:
        return [self.table, np.asarray(self.clients, np.int64)]

    def settings(self) -> dict:
        return {"round": int(self.round), "mu": float(self.mu), "init-seed": int(self.init_seed),
                "clip-norm": float(self.clip_norm),
                "fed-config": json.dumps(dataclasses.asdict(self.config))}

    @staticmethod
    def decode(arrays: list[np.ndarray], settings: dict) -> "Request":
        table, clients = arrays
        return Request(np.asarray(table, np.float32), np.asarray(clients, np.int64), int(settings["round"]),
                       float(settings["mu"]), FedConfig(**json.loads(settings["fed-config"])), int(settings["init-seed"]),
                       float(settings["clip-norm"]))


@dataclass
class Reply:
    """A node's answer: its users' updates and its evaluation of θ_t.

    Attributes:
        updates: :class:`helpers.fedcore.Updates` of the node's sampled users.
        errors: {"test": (Σ(r − r̂)² stars², n), "train": (…, n)} over all the node's users.
    """

    updates: Updates
    errors: dict

    def arrays(self) -> list[np.ndarray]:
        u = self.updates
        return [np.asarray(u.clients, np.int64), np.asarray(u.num_examples, np.int64), np.asarray(u.slot, np.int64),
                np.asarray(u.rows, np.int64), np.asarray(u.values, np.float32), np.asarray(u.upload_bytes, np.int64)]

    def metrics(self) -> dict:
        return {f"{split}-{part}": float(value) for split, pair in self.errors.items()
                for part, value in zip(("sse", "n"), pair)}

    @staticmethod
    def decode(arrays: list[np.ndarray], metrics: dict) -> "Reply":
        clients, counts, slot, rows, values, upload = (np.asarray(a) for a in arrays)
        errors = {split: (float(metrics[f"{split}-sse"]), int(metrics[f"{split}-n"])) for split in ("test", "train")}
        return Reply(Updates(clients, counts, slot, rows, values, upload), errors)  # values keep their (R, W) shape


def payload_bytes(arrays: list[np.ndarray]) -> int:
    """Bytes of the arrays of one message (the payload; the protocol's framing comes on top)."""
    return int(sum(np.asarray(a).nbytes for a in arrays))


@dataclass
class Description:
    """What a node tells the server when it joins: its user ids (m,) and their numbers of
    training ratings (m,), Σ of those ratings, and the index-space sizes."""

    client_ids: np.ndarray
    counts: np.ndarray
    rating_sum: float
    n_users: int
    n_items: int

    def arrays(self) -> list[np.ndarray]:
        return [np.asarray(self.client_ids, np.int64), np.asarray(self.counts, np.int64)]

    def metrics(self) -> dict:
        return {"rating-sum": float(self.rating_sum), "n-users": int(self.n_users), "n-items": int(self.n_items)}

    @staticmethod
    def decode(arrays: list[np.ndarray], metrics: dict) -> "Description":
        return Description(np.asarray(arrays[0], np.int64), np.asarray(arrays[1], np.int64), float(metrics["rating-sum"]),
                           int(metrics["n-users"]), int(metrics["n-items"]))


# ---------------------------------------------------------------- one node


def describe(federation: fl.Federation) -> Description:
    """A node's :class:`Description` from its data."""
    ratings = federation.train["rating"].to_numpy(np.float64)
    return Description(federation.client_ids, federation.num_examples(federation.client_ids), float(ratings.sum()),
                       federation.n_users, federation.n_items)


def start_private(federation: fl.Federation, dim: int, seed: int) -> fl.ClientStore:
    """The node's private values before round 1: the same seeded draw as
    :func:`helpers.federated.init_state` (a node keeps only its users' rows in use)."""
    return fl.init_tables(federation.n_users, federation.n_items, dim, seed)[1]


def answer(federation: fl.Federation, store: fl.ClientStore, request: Request) -> Reply:
    """What a node does with a round's message: evaluate θ_t on all its users, then train the
    sampled ones (:func:`helpers.federated.local_training`, updating ``store`` in place) and,
    when the request says so, clip each user's update to norm C before it leaves the node."""
    federation.mu = request.mu
    state = ServerState(request.table, request.round)
    errors = {split: fl.squared_error_sum(state, store, federation, frame)
              for split, frame in (("test", federation.test), ("train", federation.train))}
    if len(request.clients):
        unknown = np.setdiff1d(request.clients, federation.client_ids)
        if len(unknown):
            raise ValueError(f"the server asked for users this node does not hold: {unknown[:5].tolist()}")
        updates = fl.local_training(federation, request.table, store, request.clients, request.config, request.round)
        if request.clip_norm > 0:
            updates = fc.clip(request.clip_norm)(updates, None)
    else:
        updates = Updates.empty(request.table.shape[1])
    return Reply(updates, errors)


# ---------------------------------------------------------------- the server's side


class Link(Protocol):
    """How the server reaches the nodes (Flower's grid in the ServerApp, :class:`LocalLink` in tests)."""

    def node_ids(self) -> list[int]: ...

    def describe(self, node_ids: list[int]) -> dict[int, Description]: ...

    def exchange(self, requests: dict[int, Request]) -> dict[int, Reply]:
        """Send every request; return the replies that came back (a node that failed or timed out is absent)."""


class LocalLink:
    """Nodes as objects in this process: node id i → (its federation, its private store). For
    tests: what the ServerApp does over the network, minus the network. ``down`` holds ids that
    do not answer (a node that died)."""

    def __init__(self, federations: list[fl.Federation], dim: int, seed: int):
        self.nodes = {i: (f, start_private(f, dim, seed)) for i, f in enumerate(federations)}
        self.down: set[int] = set()

    def node_ids(self) -> list[int]:
        return [i for i in self.nodes if i not in self.down]

    def describe(self, node_ids):
        return {i: describe(self.nodes[i][0]) for i in node_ids if i not in self.down}

    def exchange(self, requests):
        return {i: answer(*self.nodes[i], request) for i, request in requests.items() if i not in self.down}


class NodeFederation:
    """The nodes, as :func:`helpers.fedcore.run_round` sees a task: ``client_ids``,
    ``num_examples``, ``download_bytes`` and ``train_clients`` (one message per node).

    It also keeps what the last exchange brought: ``evaluation`` ({test_rmse, train_rmse}
    pooled over the nodes that answered), ``nodes_answered``, and the payload bytes sent and
    received (``bytes_sent``, ``bytes_received``).
    """

    statistics_columns = None  # lesson 03's MF

    def __init__(self, link: Link, init_seed: int = 0, clip_norm: float = 0.0):
        self.link, self.init_seed, self.clip_norm = link, init_seed, clip_norm
        self.descriptions: dict[int, Description] = {}
        self.owner: dict[int, int] = {}          # user id → node id holding it
        self.evaluation: dict = {}
        self.nodes_answered = 0
        self.bytes_sent = self.bytes_received = 0
        self.refresh()
        if not self.descriptions:
            raise RuntimeError("no node is connected: nothing to train")
        first = next(iter(self.descriptions.values()))
        self.n_users, self.n_items = first.n_users, first.n_items
        total = sum(int(d.counts.sum()) for d in self.descriptions.values())
        self.mu = sum(d.rating_sum for d in self.descriptions.values()) / total  # one federated sum, once

    def refresh(self) -> list[int]:
        """Ask nodes that connected since the last call for their :class:`Description`; a node that
        comes back under a new id takes its users over. Returns the new node ids."""
        online = self.link.node_ids()
        new = [i for i in online if i not in self.descriptions]
        for node, description in self.link.describe(new).items():
            self.descriptions[node] = description
            self.owner.update(dict.fromkeys(description.client_ids.tolist(), node))
        counts = {}
        for node, description in self.descriptions.items():
            counts.update(zip(description.client_ids.tolist(), description.counts.tolist()))
        self.client_ids = np.array(sorted(counts), np.int64)
        self._count = np.zeros(max(self.client_ids, default=-1) + 1, np.int64)
        self._count[self.client_ids] = [counts[c] for c in self.client_ids]
        self.online = [i for i in online if i in self.descriptions]
        return new

    def num_examples(self, clients: np.ndarray) -> np.ndarray:
        return self._count[np.asarray(clients, dtype=np.int64)]

    def download_bytes(self, clients: np.ndarray, width: int) -> np.ndarray:
        """As in the simulation: the rows each user rated (the measured payload is ``bytes_sent``)."""
        return self.num_examples(clients) * fc.row_bytes(width)

    def exchange(self, params: np.ndarray, clients: np.ndarray, config: FedConfig, round_num: int) -> list[Reply]:
        """One message to every online node (its sampled users among ``clients``); pools the evaluation."""
        clients = np.asarray(clients, np.int64)
        holder = np.array([self.owner[c] for c in clients.tolist()], np.uint64)  # Flower node ids are 64-bit unsigned
        requests = {node: Request(params, clients[holder == np.uint64(node)], round_num, self.mu, config, self.init_seed,
                                  self.clip_norm) for node in self.online}
        replies = self.link.exchange(requests)
        self.bytes_sent = sum(payload_bytes(r.arrays()) for r in requests.values())
        self.bytes_received = sum(payload_bytes(r.arrays()) for r in replies.values())
        self.nodes_answered = len(replies)
        sums = {split: np.sum([r.errors[split] for r in replies.values()], axis=0) for split in ("test", "train")}
        self.evaluation = {f"{split}_rmse": float(np.sqrt(s[0] / s[1])) if len(replies) else float("nan")
                           for split, s in sums.items()}
        return list(replies.values())

    def train_clients(self, params, store, clients, config, round_num) -> Updates:
        """Step (2) of the round: every online node trains its sampled users; users of a node that
        did not answer are missing from the result (the round goes on without them)."""
        replies = [r.updates for r in self.exchange(params, clients, config, round_num)]
        replies = [u for u in replies if len(u.clients)]
        if not replies:
            return Updates.empty(params.shape[1])
        offsets = np.cumsum([0] + [len(u.clients) for u in replies[:-1]])
        return Updates(np.concatenate([u.clients for u in replies]), np.concatenate([u.num_examples for u in replies]),
                       np.concatenate([u.slot + o for u, o in zip(replies, offsets)]),
                       np.concatenate([u.rows for u in replies]), np.concatenate([u.values for u in replies]),
                       np.concatenate([u.upload_bytes for u in replies]))


def train_on_nodes(link: Link, config: FedConfig, rounds: int, dim: int, seed: int = 0,
                   algorithm: fc.Algorithm = fc.FEDAVG, clip_norm: float = 0.0,
                   on_round: Callable[[fc.History], None] | None = None) -> tuple[ServerState, fc.History]:
    """Lesson 03's FedAvg over the nodes behind ``link``: ``rounds`` calls of
    :func:`helpers.fedcore.run_round` with ``algorithm``'s hooks (step (2) always goes over the
    link), then one exchange that evaluates the final table. ``clip_norm`` > 0 has the nodes
    clip each user's update before sending it (DP-FedAvg's clipping, done where the data is).

    Returns (final state, :class:`helpers.fedcore.History`) like
    :func:`helpers.federated.train_federated`: ``test_rmse`` and ``train_rmse`` before round 1
    and after every round (pooled over the nodes that answered), reports whose bytes are the
    payloads measured on the messages, and ``notes["nodes_answered"]`` per exchange.
    ``on_round(history)`` is called after each round and after the final evaluation.
    """
    if int(rounds) != rounds or rounds < 1:
        raise ValueError(f"rounds must be a whole number ≥ 1, got {rounds}")
    if algorithm.client_update is not None:
        raise ValueError("on nodes, step (2) is the nodes' own training: the algorithm must not replace it")
    task = NodeFederation(link, seed, clip_norm)
    state = fl.init_tables(task.n_users, task.n_items, dim, seed)[0]
    history = fc.History({"test_rmse": [], "train_rmse": []}, notes={"nodes_answered": [], "mu": task.mu})
    for _ in range(int(rounds)):
        task.refresh()
        state, report = fc.run_round(state, task, None, config, algorithm)  # step (2) over the link
        history.reports.append(dataclasses.replace(report, bytes_down=task.bytes_sent, bytes_up=task.bytes_received))
        _record(history, task)
        if on_round:
            on_round(history)
    task.refresh()
    task.exchange(state.params, np.zeros(0, np.int64), config, state.round)  # evaluate the final table
    _record(history, task)
    if on_round:
        on_round(history)
    return state, history


def _record(history: fc.History, task: NodeFederation) -> None:
    for name, value in task.evaluation.items():
        history.metrics[name].append(value)
    history.notes["nodes_answered"].append(task.nodes_answered)


# ---------------------------------------------------------------- progress, as the ServerApp reports it


def progress_event(history: fc.History) -> dict:
    """The run so far as one JSON-ready dict: per evaluation ``test_rmse``, ``train_rmse``,
    ``nodes_answered``; per round ``seconds``, ``bytes_down``, ``bytes_up`` (payloads) and
    ``trained`` (users whose update arrived)."""
    reports = history.reports
    return {"event": "progress", "test_rmse": list(history.metrics["test_rmse"]),
            "train_rmse": list(history.metrics["train_rmse"]), "nodes_answered": list(history.notes["nodes_answered"]),
            "seconds": [r.seconds for r in reports], "bytes_down": [r.bytes_down for r in reports],
            "bytes_up": [r.bytes_up for r in reports], "trained": [len(r.trained) for r in reports]}


class EventLog:
    """Appends one JSON object per line to ``path`` (nothing when ``path`` is empty): how the
    ServerApp, a process of the SuperLink, tells the notebook how the run goes."""

    def __init__(self, path: str | Path):
        self.path = Path(path) if str(path) else None

    def write(self, event: dict) -> None:
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps(event) + "\n")

    def round(self, history: fc.History) -> None:
        self.write(progress_event(history))


def read_events(path: Path) -> list[dict]:
    """The complete lines of an :class:`EventLog` file (a line being written is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    return [json.loads(line) for line in lines[:-1] if line.strip()]
