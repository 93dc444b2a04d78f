"""Lesson 11: the federated MF as messages (no processes), and on real Flower processes on loopback."""

from __future__ import annotations

import socket

import numpy as np
import psutil
import pytest

from helpers import fedcore as fc
from helpers import federated as fl
from helpers import flower_deploy as fd
from helpers import flower_rounds as fr
from helpers import lessons
from helpers import privacy as pv
from helpers.processes import PortInUse, Process, check_port_free, free_port
from conftest import skip_without_data

# a deadline per test: a SuperLink or SuperNode that stops answering fails its test, never the whole run
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def federation():
    skip_without_data("ml-latest-small")  # offline with no mirror: one line saying how to get it
    return lessons.movielens_federation()[1]


@pytest.fixture(scope="module")
def node_files(federation, tmp_path_factory):
    return fr.write_partitions(federation, 3, tmp_path_factory.mktemp("nodes"))


# ---------------------------------------------------------------- messages and the server's loop, in process


def test_partitions_hold_every_user_once_with_all_their_ratings(federation, node_files):
    parts = [fr.load_partition(path) for path in node_files]
    users = np.concatenate([p.client_ids for p in parts])
    assert sorted(users) == sorted(federation.client_ids)
    assert sum(len(p.train) for p in parts) == len(federation.train)
    assert sum(len(p.test) for p in parts) == len(federation.test)
    assert all(np.isnan(p.mu) for p in parts)  # μ comes from the server


def test_bad_node_files_and_counts_are_refused(tmp_path, federation):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fr.load_partition(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", something=np.zeros(3))
    with pytest.raises(ValueError, match="lacks train_user"):
        fr.load_partition(tmp_path / "other.npz")
    for bad in (0, 2.5, len(federation.client_ids) + 1):
        with pytest.raises(ValueError, match="number of nodes"):
            fr.node_users(federation.client_ids, bad)


def test_messages_survive_encoding():
    config = lessons.mf_config()
    request = fr.Request(np.ones((4, 3), np.float32), np.array([5, 7]), 3, 3.5, config, 1, 0.5)
    back = fr.Request.decode(request.arrays(), request.settings())
    assert back.config == config and back.round == 3 and back.clip_norm == 0.5 and back.init_seed == 1
    np.testing.assert_array_equal(back.clients, [5, 7])
    updates = fc.Updates(np.array([5]), np.array([2]), np.array([0, 0]), np.array([1, 3]),
                         np.ones((2, 3), np.float32), np.array([40]))
    reply = fr.Reply.decode(fr.Reply(updates, {"test": (2.0, 4), "train": (1.0, 8)}).arrays(),
                            fr.Reply(updates, {"test": (2.0, 4), "train": (1.0, 8)}).metrics())
    np.testing.assert_array_equal(reply.updates.values, updates.values)
    assert reply.errors == {"test": (2.0, 4), "train": (1.0, 8)}


def test_rounds_over_nodes_equal_the_simulation(federation, node_files):
    config = lessons.mf_config()
    _, _, local = fl.train_federated(federation, config, rounds=3, dim=8)
    link = fr.LocalLink([fr.load_partition(p) for p in node_files], dim=8, seed=0)
    _, remote = fr.train_on_nodes(link, config, 3, dim=8)
    np.testing.assert_allclose(remote.test_rmse, local.test_rmse, rtol=1e-6)
    np.testing.assert_allclose(remote.train_rmse, local.train_rmse, rtol=1e-6)
    assert [len(r.trained) for r in remote.reports] == [50, 50, 50]
    assert remote.notes["nodes_answered"] == [3, 3, 3, 3]
    table = federation.n_items * 9 * 4
    assert remote.reports[0].bytes_down == 3 * table + 50 * 8  # the table to each node, the users' ids


def test_dp_on_nodes_equals_the_simulation(federation, node_files):
    config = lessons.mf_config()
    dp = pv.DPConfig(clip_norm=0.5, noise_multiplier=0.5, expected_clients=50)
    rate = 50 / len(federation.client_ids)
    _, _, local = fl.train_federated(federation, config, rounds=2, dim=8, algorithm=pv.dp_fedavg(dp, rate))
    link = fr.LocalLink([fr.load_partition(p) for p in node_files], dim=8, seed=0)
    on_nodes = pv.dp_fedavg(dp, rate, clipped_by_clients=True)      # the nodes clip; the server only adds noise
    _, remote = fr.train_on_nodes(link, config, 2, dim=8, algorithm=on_nodes, clip_norm=dp.clip_norm)
    np.testing.assert_allclose(remote.test_rmse, local.test_rmse, rtol=1e-6)
    assert max(r.update_norms.max() for r in remote.reports) <= 0.5 + 1e-5  # clipped on the nodes


def test_a_silent_node_loses_its_users_for_the_round_and_training_goes_on(federation, node_files):
    link = fr.LocalLink([fr.load_partition(p) for p in node_files], dim=8, seed=0)
    seen = []

    def kill_after_first(history):
        seen.append(len(history.reports))
        if len(history.reports) == 1:
            link.down.add(0)

    _, history = fr.train_on_nodes(link, lessons.mf_config(), 3, dim=8, on_round=kill_after_first)
    assert history.notes["nodes_answered"] == [3, 2, 2, 2]
    assert len(history.reports[0].trained) == 50 and all(len(r.trained) < 50 for r in history.reports[1:])
    assert np.all(np.isfinite(history.test_rmse)) and seen == [1, 2, 3, 3]


def test_event_log_skips_a_line_being_written(tmp_path):
    log = fr.EventLog(tmp_path / "events.jsonl")
    log.write({"event": "progress", "test_rmse": [1.0]})
    with open(tmp_path / "events.jsonl", "a") as file:
        file.write('{"event": "pro')  # the ServerApp is mid-write
    assert fr.read_events(tmp_path / "events.jsonl") == [{"event": "progress", "test_rmse": [1.0]}]
    fr.EventLog("").write({"event": "ignored"})  # no file: nothing happens


def test_a_taken_port_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free(port)
    check_port_free(port)  # free again


def test_process_stop_ends_children_that_left_the_session(tmp_path):
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True); "
              "time.sleep(60)")
    process = Process("sleeper", [psutil.Process().exe(), "-c", script], tmp_path / "log.txt")
    deadline = psutil.time.time() + 10
    while len(process.family()) < 2 and psutil.time.time() < deadline:
        psutil.time.sleep(0.1)
    assert len(process.family()) == 2
    assert process.stop(timeout=5) == [] and process.family() == []


# ---------------------------------------------------------------- real processes on loopback


def _processes_of(deployment: fd.Deployment) -> list[int]:
    """Live processes whose Flower home is this deployment's (lesson 11 may run its own meanwhile)."""
    home, found = str(deployment.home / "flwr"), []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get("FLWR_HOME") == home and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


@pytest.mark.xdist_group("flower")
def test_two_nodes_two_rounds_on_flower_match_the_simulation_and_leave_nothing(federation):
    config = lessons.mf_config()
    with fd.Deployment(federation, 2) as flower:
        result = flower.run(fd.RunSettings(rounds=2, config=config, dim=8, min_nodes=2))
        started = _processes_of(flower)
        assert len(started) >= 3 and set(flower.processes_left()) <= set(started)  # link, 2 nodes and their helpers
    assert flower.processes_left() == [] and _processes_of(flower) == []
    assert result.status == "finished:completed" and result.nodes_answered == [2, 2, 2]
    local = fl.train_federated(federation, config, rounds=2, dim=8)[2]
    np.testing.assert_allclose(result.test_rmse, local.test_rmse, rtol=1e-6)
    assert result.trained == [50, 50] and result.wire_bytes > sum(result.bytes_down)


@pytest.mark.xdist_group("flower")
def test_a_node_without_a_registered_key_is_refused_and_a_serverapp_failure_is_quoted(federation):
    with fd.Deployment(federation, 1, authenticate=True) as flower:
        with pytest.raises(fd.FlowerError, match="only 1 of the 2 nodes needed"):  # raised inside the ServerApp
            flower.run(fd.RunSettings(rounds=1, config=lessons.mf_config(), dim=8, min_nodes=2, node_wait=1))
        with pytest.raises(fd.FlowerError, match="did not finish within 1 s"):
            flower.run(fd.RunSettings(rounds=5, config=lessons.mf_config(), dim=8), timeout=1)
        refused, why = flower.try_unregistered_node(timeout=60)
        assert refused, "an unregistered node joined the federation"
        assert "Failed to activate SuperNode" in why
        assert flower.online_nodes() == 1  # the registered node is still there
    assert flower.processes_left() == []


@pytest.mark.xdist_group("flower")
def test_a_taken_superlink_port_raises_before_anything_starts(federation):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        deployment = fd.Deployment(federation, 1, port=port)
        with pytest.raises(PortInUse, match=str(port)):
            with deployment:
                pass
    assert deployment.processes_left() == []


def test_a_missing_flower_cli_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(fd.FlowerError, match="pip install -r requirements.txt"):
        fd.flower_command("flower-superlink")


def test_free_port_is_free():
    check_port_free(free_port())
