"""Cheaper uploads for federated MF: top-k sparsification and 8-bit quantisation (lesson 09).

In lesson 03 a client uploads, for every item it rated, the item's index and its
d + 1 changed values in float32: m_k (4 + 4(d + 1)) bytes. Two ways to send less:

- **top-k**: send only the k = ⌈f · m_k (d + 1)⌉ entries of largest magnitude, each as
  (4-byte position in the item table, float32 value): 8k bytes. The rest count as 0.
- **8-bit quantisation**: one float32 scale s = max|v| / 127 per client, then every
  value as the int8 round(v / s): m_k (4 + (d + 1)) + 4 bytes. Error per value ≤ s / 2.

Both lose information each round. **Error feedback** (Seide et al. 2014; Karimireddy et
al. 2019) keeps what was not sent: client k adds its residual e_k to the next update it
compresses, v = Δ_k + e_k, and keeps e_k ← v − decode(encode(v)). Nothing is lost for
good, only delayed. The residual is client state, like p_u: one row per item the client
rated, never sent; it lives in the client state's ``residual`` (client id → (m_k, d + 1)).

Compression is a transform of the federated core (:func:`compress`): the round report's
upload bytes are then what the encoded messages cost.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers import fedcore as fc
from helpers import federated as fl
from helpers.metrics import first_reaching
from helpers.progress import progress as progress_bar

METHODS = {"none": "float32 (lesson 03)", "topk": "top-k sparsification", "int8": "8-bit quantisation"}
INDEX_BYTES = 4


@dataclass(frozen=True)
class Compressor:
    """How clients encode their upload.

    Attributes:
        method: a key of :data:`METHODS`.
        fraction: for ``"topk"``, the share f of entries kept, 0 < f ≤ 1.
        error_feedback: carry what was not sent into the next round's upload.
    """

    method: str = "none"
    fraction: float = 0.1
    error_feedback: bool = True

    def check(self) -> None:
        """Raise ValueError for settings that cannot run."""
        if self.method not in METHODS:
            raise ValueError(f"unknown compression {self.method!r}; choose from {list(METHODS)}")
        if self.method == "topk" and not (np.isfinite(self.fraction) and 0 < self.fraction <= 1):
            raise ValueError(f"the share of entries kept must lie in (0, 1], got {self.fraction}")

    def label(self) -> str:
        """A legend label, e.g. "top-1% + error feedback"."""
        name = {"none": "float32", "topk": f"top-{self.fraction * 100:g}%", "int8": "8-bit"}[self.method]
        if self.method != "none":
            name += " + error feedback" if self.error_feedback else ", no error feedback"
        return name


def kept_count(size: int, fraction: float) -> int:
    """k = ⌈fraction · size⌉, at least 1 and at most ``size`` (0 for an empty update)."""
    return min(size, max(1, int(np.ceil(fraction * size))))


def top_k(values: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the :func:`kept_count` entries of largest magnitude of ``values`` (any shape), zero the rest.

    Returns an array of the same shape; kept entries are exact.
    """
    flat = values.ravel()
    k = kept_count(flat.size, fraction)
    kept = np.zeros_like(flat)
    if flat.size:
        index = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k:]
        kept[index] = flat[index]
    return kept.reshape(values.shape)


def quantise_int8(values: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """(int8 codes round(v / s) in −127..127, scale s = max|v| / 127 as float32); s = 1 when v is all 0."""
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    scale = np.float32(peak / 127 if peak > 0 else 1.0)
    return np.clip(np.rint(values / scale), -127, 127).astype(np.int8), scale


def dequantise_int8(codes: np.ndarray, scale: np.float32) -> np.ndarray:
    """The float32 values the server reconstructs: codes · s."""
    return codes.astype(np.float32) * scale


def encode(block: np.ndarray, compressor: Compressor) -> tuple[np.ndarray, int]:
    """What the server receives from one client, and the bytes it cost.

    Args:
        block: (m, d + 1) the client's changes to the m item rows it rated (vector, bias).
    Returns:
        (the decoded (m, d + 1) block, upload bytes).
    """
    m, width = block.shape
    if compressor.method == "none":
        return block.copy(), m * (INDEX_BYTES + 4 * width)
    if compressor.method == "int8":
        codes, scale = quantise_int8(block)
        return dequantise_int8(codes, scale), m * (INDEX_BYTES + width) + 4
    return top_k(block, compressor.fraction), kept_count(block.size, compressor.fraction) * (INDEX_BYTES + 4)


def compress_with_feedback(block: np.ndarray, residual: np.ndarray, compressor: Compressor
                           ) -> tuple[np.ndarray, np.ndarray, int]:
    """One client's upload with error feedback: v = Δ_k + e_k is encoded, e_k ← v − decoded.

    Args:
        block: (m, d + 1) this round's changes.  residual: (m, d + 1) e_k, what earlier
            rounds did not send (zeros when ``compressor.error_feedback`` is off).
    Returns:
        (decoded block the server receives, the new residual, upload bytes).
    """
    value = block + residual if compressor.error_feedback else block
    decoded, cost = encode(value, compressor)
    return decoded, (value - decoded if compressor.error_feedback else residual), cost


def compress(compressor: Compressor) -> fc.Transform:
    """A transform of the core: every reporting client encodes its rows, with error feedback
    through its residual in ``context.clients_state.residual`` (written for those clients only).

    The rows of a client come in the same order every round (its items), so its residual
    lines up with them.
    """
    compressor.check()

    def transform(updates: fc.Updates, context: fc.RoundContext) -> fc.Updates:
        residuals = context.clients_state.residual
        decoded, upload = np.empty_like(updates.values), updates.upload_bytes.copy()
        for k, client in enumerate(updates.clients):
            mine = updates.slot == k
            residual = residuals.get(int(client), np.zeros_like(updates.values[mine]))
            decoded[mine], new_residual, upload[k] = compress_with_feedback(updates.values[mine], residual, compressor)
            if compressor.error_feedback:
                residuals[int(client)] = new_residual
        return dataclasses.replace(updates, values=decoded, upload_bytes=upload)

    return transform


def compressed_fedavg(compressor: Compressor) -> fc.Algorithm:
    """FedAvg whose clients upload through ``compressor`` (plain FedAvg for ``"none"``)."""
    return fc.Algorithm(transforms=(compress(compressor),)) if compressor.method != "none" else fc.FEDAVG


def run_compressed(federation: fl.Federation, config: fl.FedConfig, compressor: Compressor, rounds: int,
                   dim: int = 32, progress: bool = False) -> fc.History:
    """Federated MF with compressed uploads; the history's ``mb_up`` counts the encoded bytes."""
    return fl.train_federated(federation, config, rounds, dim, algorithm=compressed_fedavg(compressor),
                              progress=progress)[2]


def comparison_runs(config: fl.FedConfig, fedsgd_rate: float = 10.0) -> dict:
    """The lesson's line-up: label → (FedConfig, Compressor). FedAvg and FedSGD in float32, top-k at
    10%, 1% and 0.1% with error feedback, 0.1% without it, and 8-bit with error feedback."""
    return {
        "FedAvg, float32": (config, Compressor("none")),
        "FedSGD, float32": (fl.FedConfig.fedsgd(config.clients_per_round, fedsgd_rate, seed=config.seed),
                            Compressor("none")),
        **{f"FedAvg, {c.label()}": (config, c) for c in (
            Compressor("topk", 0.1), Compressor("topk", 0.01), Compressor("topk", 0.001),
            Compressor("topk", 0.001, error_feedback=False), Compressor("int8"))},
    }


def compare_uploads(federation: fl.Federation, runs: dict, rounds: int, dim: int = 32,
                    progress: bool = True) -> dict:
    """Train every run of ``runs`` (label → (FedConfig, Compressor)); label → history."""
    return {label: run_compressed(federation, config, compressor, rounds, dim)
            for label, (config, compressor) in progress_bar(list(runs.items()), "runs", enabled=progress)}


def upload_table(curves: dict, target_rmse: float, on: str = "test_rmse") -> pd.DataFrame:
    """One row per run: final test RMSE, MB uploaded in all, and rounds and MB until the RMSE
    named ``on`` first reaches ``target_rmse`` (None: never within the rounds run).

    Args:
        curves: label → :class:`helpers.fedcore.History`, as from :func:`compare_uploads`.
        on: the curve the target is read on: ``"valid_rmse"`` where the federation holds
            validation ratings (the lesson's choice: the test ratings are then looked at once,
            after the last round), ``"test_rmse"`` otherwise.
    """
    rows = []
    for label, history in curves.items():
        mb = history.mb_up
        hit = first_reaching(getattr(history, on), target_rmse, higher_is_better=False)
        rows.append({"run": label, "final test RMSE": round(history.test_rmse[-1], 4),
                     "MB uploaded": round(float(mb[-1]), 2), "rounds to target": hit,
                     "MB up to target": None if hit is None else round(float(mb[hit]), 2)})
    return pd.DataFrame(rows).astype({"rounds to target": "Int64"}).set_index("run")
