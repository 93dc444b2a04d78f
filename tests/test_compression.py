"""helpers.compression's edge cases, each found by a surviving mutant (make mutation MODULE=compression):
the residual carried from round to round for the same client only, error feedback switched off, the
smallest top-k, an empty update, the decoded dtype, plain FedAvg for "none" and the legend labels."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from helpers import compression as cp
from helpers import fedcore as fc


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
