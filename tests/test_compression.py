"""helpers.compression's edge cases, each found by a surviving mutant (make mutation MODULE=compression):
the residual carried from round to round for the same client only, error feedback switched off, the
smallest top-k, an empty update, the decoded dtype, plain FedAvg for "none" and the legend labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from helpers import compression as cp
from helpers import fedcore as fc
from helpers import federated as fl
from test_federated import planted_federation


def one_row_updates(client: int, values) -> fc.Updates:
    """One client's upload of one item row (row 0)."""
    values = np.asarray([values], np.float32)
    return fc.Updates(np.array([client]), np.array([1]), np.array([0]), np.array([0]), values,
                      np.array([0], np.int64))


def test_error_feedback_carries_the_unsent_part_into_the_same_clients_next_upload():
    transform = cp.compress(cp.Compressor("topk", fraction=0.5, error_feedback=True))
    context = SimpleNamespace(clients_state=SimpleNamespace(residual={}))
    first = transform(one_row_updates(7, [1.0, 0.9]), context)
    np.testing.assert_array_equal(first.values, [[1.0, 0.0]])               # top-1 of 2 sent, 0.9 kept back
    np.testing.assert_allclose(context.clients_state.residual[7], [[0.0, 0.9]])
    other = transform(one_row_updates(8, [0.0, 0.5]), context)              # another client: no residual of 7's
    np.testing.assert_allclose(other.values, [[0.0, 0.5]])
    second = transform(one_row_updates(7, [0.0, 0.5]), context)             # 7 again: 0.5 + 0.9 goes out
    np.testing.assert_allclose(second.values, [[0.0, 1.4]], rtol=1e-6)
    np.testing.assert_allclose(context.clients_state.residual[7], [[0.0, 0.0]])


def test_without_error_feedback_the_residual_is_neither_used_nor_changed():
    compressor = cp.Compressor("topk", fraction=0.5, error_feedback=False)
    residual = np.array([[0.0, 5.0]])
    decoded, new_residual, _ = cp.compress_with_feedback(np.array([[1.0, 0.9]]), residual, compressor)
    np.testing.assert_array_equal(decoded, [[1.0, 0.0]])
    assert new_residual is residual
    transform, context = cp.compress(compressor), SimpleNamespace(clients_state=SimpleNamespace(residual={}))
    transform(one_row_updates(7, [1.0, 0.9]), context)
    assert context.clients_state.residual == {}


def test_the_smallest_top_k_keeps_one_entry_and_an_empty_update_costs_nothing():
    assert cp.kept_count(1000, 1e-6) == 1 and cp.kept_count(3, 1.0) == 3 and cp.kept_count(0, 0.5) == 0
    assert np.count_nonzero(cp.top_k(np.arange(1.0, 101.0), 1e-6)) == 1
    codes, scale = cp.quantise_int8(np.zeros((0, 3), np.float32))
    assert codes.shape == (0, 3) and codes.dtype == np.int8 and scale == np.float32(1.0)
    codes, scale = cp.quantise_int8(np.array([0.0, -2.54, 1.27], np.float32))
    np.testing.assert_array_equal(codes, [0, -127, 64])
    decoded = cp.dequantise_int8(codes, scale)
    assert decoded.dtype == np.float32 and np.abs(decoded - [0.0, -2.54, 1.27]).max() <= scale / 2 + 1e-7


def test_none_is_plain_fedavg_and_labels_name_method_and_feedback():
    assert cp.compressed_fedavg(cp.Compressor("none")) is fc.FEDAVG
    assert cp.compressed_fedavg(cp.Compressor("int8")).transforms
    assert cp.Compressor("none").label() == "float32"
    assert cp.Compressor("topk", fraction=0.01).label() == "top-1% + error feedback"
    assert cp.Compressor("int8", error_feedback=False).label() == "8-bit, no error feedback"
    with pytest.raises(ValueError, match=r"share of entries kept must lie in \(0, 1\], got 0"):
        cp.Compressor("topk", fraction=0.0).check()
    with pytest.raises(ValueError, match="unknown compression 'zip'"):
        cp.Compressor("zip").check()


def test_topk_may_keep_every_entry():
    cp.Compressor("topk", fraction=1.0).check()
    np.testing.assert_array_equal(cp.top_k(np.array([3.0, -1.0]), 1.0), [3.0, -1.0])


def test_upload_table_reads_the_target_on_the_named_curve_and_rounds_each_column():
    history = SimpleNamespace(test_rmse=[1.0, 0.95, 0.923456], valid_rmse=[1.0, 0.88, 0.87],
                              mb_up=np.array([0.0, 0.123456, 0.246912]))
    never = SimpleNamespace(test_rmse=[1.0, 0.99, 0.98], valid_rmse=[1.0, 0.99, 0.98], mb_up=np.array([0.0, 1.5, 3.0]))
    table = cp.upload_table({"run a": history, "run b": never}, 0.89, on="valid_rmse")
    assert table.loc["run a"].to_dict() == {"final test RMSE": 0.9235, "MB uploaded": 0.25,
                                            "rounds to target": 1, "MB up to target": 0.12}
    assert table.loc["run b", "MB up to target"] is None or np.isnan(table.loc["run b", "MB up to target"])
    assert table["rounds to target"].isna().tolist() == [False, True]
    assert cp.upload_table({"run a": history}, 0.89)["rounds to target"].isna().all()  # test curve: never ≤ 0.89


def test_compare_uploads_trains_each_run_for_the_rounds_and_size_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(cp, "run_compressed", lambda fed, config, compressor, rounds, dim: calls.append(
        (config, compressor.method, rounds, dim)) or "history")
    runs = {"plain": ("config", cp.Compressor("none")), "8-bit": ("config", cp.Compressor("int8"))}
    assert cp.compare_uploads("federation", runs, rounds=7, dim=5, progress=False) == {"plain": "history", "8-bit": "history"}
    assert calls == [("config", "none", 7, 5), ("config", "int8", 7, 5)]


@pytest.mark.parametrize("compressor, expected_bytes", [
    (cp.Compressor("none"), 3 * (4 + 4 * 5)),          # index + d + 1 float32 values per row
    (cp.Compressor("int8"), 3 * (4 + 5) + 4),           # index + d + 1 int8 codes per row, one float32 scale
    (cp.Compressor("topk", 0.2), 3 * (4 + 4)),          # ⌈0.2 · 15⌉ = 3 entries, each position + value
])
def test_encode_sends_what_each_method_sends_and_counts_its_bytes(compressor, expected_bytes):
    block = np.arange(1.0, 16.0, dtype=np.float32).reshape(3, 5) / 10
    decoded, cost = cp.encode(block, compressor)
    assert cost == expected_bytes
    if compressor.method == "none":
        np.testing.assert_array_equal(decoded, block)
        assert decoded is not block
    elif compressor.method == "int8":
        assert 0 < np.abs(decoded - block).max() <= 1.5 / 127 / 2 + 1e-7
    else:
        np.testing.assert_array_equal(decoded, np.where(block >= 1.3, block, 0))


def test_the_transform_reports_each_clients_encoded_bytes():
    updates = fc.Updates(np.array([3, 9]), np.array([2, 1]), np.array([0, 0, 1]), np.array([0, 1, 2]),
                         np.ones((3, 5), np.float32), np.array([48, 24], np.int64))
    context = SimpleNamespace(clients_state=SimpleNamespace(residual={}))
    sent = cp.compress(cp.Compressor("int8"))(updates, context)
    np.testing.assert_array_equal(sent.upload_bytes, [2 * (4 + 5) + 4, 1 * (4 + 5) + 4])
    np.testing.assert_array_equal(updates.upload_bytes, [48, 24])  # the input is not changed


def test_int8_scales_small_updates_to_the_full_code_range():
    codes, scale = cp.quantise_int8(np.array([0.5, -0.25, 0.0], np.float32))
    assert scale == np.float32(0.5 / 127)
    np.testing.assert_array_equal(codes, [127, -64, 0])


def test_a_share_above_one_is_refused():
    with pytest.raises(ValueError, match=r"share of entries kept must lie in \(0, 1\], got 1.5"):
        cp.Compressor("topk", fraction=1.5).check()


def test_the_comparison_line_up_names_each_run_and_its_settings():
    config = fl.FedConfig(clients_per_round=12, local_epochs=2, batch_size=8, client_lr=0.1, seed=4)
    runs = cp.comparison_runs(config, fedsgd_rate=7.0)
    assert list(runs) == ["FedAvg, float32", "FedSGD, float32", "FedAvg, top-10% + error feedback",
                          "FedAvg, top-1% + error feedback", "FedAvg, top-0.1% + error feedback",
                          "FedAvg, top-0.1%, no error feedback", "FedAvg, 8-bit + error feedback"]
    assert all(c is config for label, (c, _) in runs.items() if label != "FedSGD, float32")
    assert runs["FedSGD, float32"][0] == fl.FedConfig.fedsgd(12, 7.0, seed=4)
    assert [(c.method, c.fraction, c.error_feedback) for _, c in runs.values()][2:] == [
        ("topk", 0.1, True), ("topk", 0.01, True), ("topk", 0.001, True), ("topk", 0.001, False), ("int8", 0.1, True)]
    assert runs["FedAvg, float32"][1].method == runs["FedSGD, float32"][1].method == "none"


def test_a_compressed_runs_history_counts_the_encoded_bytes():
    federation = planted_federation(n_users=12, n_items=20)
    config = fl.FedConfig(clients_per_round=12, local_epochs=1, batch_size=4, client_lr=0.1)
    plain = cp.run_compressed(federation, config, cp.Compressor("none"), rounds=2, dim=4)
    int8 = cp.run_compressed(federation, config, cp.Compressor("int8"), rounds=2, dim=4)
    rows = int(federation.num_examples(federation.client_ids).sum())
    assert plain.mb_up[-1] == pytest.approx(2 * rows * (4 + 4 * 5) / 1e6)
    assert int8.mb_up[-1] == pytest.approx(2 * (rows * (4 + 5) + 4 * 12) / 1e6)
    assert len(int8.test_rmse) == 3 and int8.test_rmse[-1] != plain.test_rmse[-1]
