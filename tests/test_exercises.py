"""Every checker accepts the reference solution and rejects typical mistakes with the right hint."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import exercises as ex


def stable_softmax(s):
    e = np.exp(s - s.max())
    return e / e.sum()


@pytest.mark.parametrize("answer, hint", [
    (stable_softmax, None),
    (lambda s: np.exp(s) / np.exp(s).sum(), "overflow"),
    (lambda s: np.exp(s), "divide by the sum"),
    (lambda s: np.full_like(s, 1 / len(s)), "that item's"),
    (lambda s: np.exp(s - s.max()), "add up to"),
])
def test_softmax(answer, hint):
    feedback = ex.check_softmax(answer)
    assert feedback.correct is (hint is None) and (hint is None or hint in feedback.message), feedback


@pytest.mark.parametrize("classes, answer, hint", [(9742, math.log(1 + 9741 / math.e), None), (9742, "8.1845", None),
                                                   (9742, math.log(9742), "blind guess"), (3, math.log(3), "blind guess"),
                                                   (9742, math.log2(1 + 9741 / math.e), "bits"),
                                                   (3, math.log(1 + 3 / math.e), "C − 1"), (9742, "eight", "give a number")])
def test_wrong_loss_floor(classes, answer, hint):
    feedback = ex.check_wrong_loss_floor(classes, answer)
    assert feedback.correct is (hint is None) and (hint is None or hint in feedback.message), feedback


def test_wrong_loss_floor_refuses_a_value_rounded_too_far():
    assert not ex.check_wrong_loss_floor(9742, "8.2").correct


@pytest.mark.parametrize("answer, hint", [(lambda t, g, r: t - r * g, None), (lambda t, g, r: t + r * g, "wrong sign"),
                                          (lambda t, g, r: t - g, "learning rate is missing"),
                                          (lambda t, g, r: -r * g, "add it to the current")])
def test_sgd_step(answer, hint):
    feedback = ex.check_sgd_step(answer)
    assert feedback.correct is (hint is None) and (hint is None or hint in feedback.message), feedback


def test_critical_learning_rate():
    m = np.array([3.0, 3.5, 4.0, 2.5, 3.2])
    x = np.stack([np.ones_like(m), m], axis=1)
    lam = np.linalg.eigvalsh(2 * x.T @ x / len(m))
    assert ex.check_critical_learning_rate(m, 2 / lam.max())
    assert "1/λ_max" in ex.check_critical_learning_rate(m, 1 / lam.max()).message
    assert "largest" in ex.check_critical_learning_rate(m, 2 / lam.min()).message
    assert "factor 2" in ex.check_critical_learning_rate(m, 2 / np.linalg.eigvalsh(x.T @ x / len(m)).max()).message


def test_summed_learning_rate():
    assert ex.check_summed_learning_rate(0.5, 1000, 0.0005)
    assert "smaller" in ex.check_summed_learning_rate(0.5, 1000, 500).message
    assert "factor n" in ex.check_summed_learning_rate(0.5, 1000, 0.5).message


@pytest.mark.parametrize("answer, hint", [
    (lambda d, n: sum(k * x for k, x in zip(n, d)) / sum(n), None),
    (lambda d, n: np.mean(d, axis=0), "averaged over clients, not examples"),
    (lambda d, n: sum(k * x for k, x in zip(n, d)), "did not divide"),
    (lambda d, n: np.sum(d, axis=0), "summed the updates"),
])
def test_fedavg_aggregate(answer, hint):
    feedback = ex.check_fedavg_aggregate(answer)
    assert feedback.correct is (hint is None) and (hint is None or hint in feedback.message), feedback


def test_upload_mb():
    n, d = np.array([20, 35, 100]), 32
    right = n.sum() * (4 + 4 * 33) / 1e6
    assert ex.check_upload_mb(n, d, right)
    assert "index" in ex.check_upload_mb(n, d, n.sum() * 4 * 33 / 1e6).message
    assert "megabits" in ex.check_upload_mb(n, d, 8 * right).message
    assert "MiB" in ex.check_upload_mb(n, d, right * 1e6 / 2 ** 20).message
    assert "upload only" in ex.check_upload_mb(n, d, 2 * right).message


def test_head_and_low_rank_parameters():
    assert ex.check_head_parameters(128, 5, 645)
    assert "bias" in ex.check_head_parameters(128, 5, 640).message
    assert ex.check_low_rank_parameters((3, 3, 64, 128), 4, 4 * (576 + 128))
    assert "full W" in ex.check_low_rank_parameters((3, 3, 64, 128), 4, 576 * 128).message
    assert "receptive field" in ex.check_low_rank_parameters((3, 3, 64, 128), 4, 4 * (64 + 128)).message


def test_additive_kernel_accepts_the_sum_and_names_two_typical_mistakes():
    assert ex.check_additive_kernel(lambda k, a, b: k + (a @ b).reshape(k.shape))
    assert "W alone" in ex.check_additive_kernel(lambda k, a, b: (a @ b).reshape(k.shape)).message
    assert "row-major" in ex.check_additive_kernel(lambda k, a, b: k + (a @ b).reshape(k.shape, order="F")).message
    assert "unchanged" in ex.check_additive_kernel(lambda k, a, b: k).message
    assert "shape" in ex.check_additive_kernel(lambda k, a, b: k.reshape(-1, k.shape[-1]) + a @ b).message
    assert "raised" in ex.check_additive_kernel(lambda k, a, b: b @ a).message


def test_additive_kernel_reference_is_the_kernel_the_course_layer_computes_with():
    import helpers.tf_quiet  # noqa: F401
    import keras

    from helpers import vision_transfer as vt

    conv = keras.layers.Conv2D(6, 3, padding="same")
    conv.build((None, 8, 8, 4))
    layer = vt.AdditiveConv2D(conv, rank=2)
    layer.w_b.assign(np.random.default_rng(0).normal(size=layer.w_b.shape))
    kernel, a, b = (keras.ops.convert_to_numpy(w) for w in (layer.kernel_source, layer.w_a, layer.w_b))
    expected = keras.ops.convert_to_numpy(layer.kernel_source + layer.delta_kernel())
    np.testing.assert_allclose(kernel + (a @ b).reshape(kernel.shape), expected, rtol=1e-5, atol=1e-7)


def test_cold_users_and_bias_transfer():
    assert ex.check_cold_users(1566, 0.5, 783)
    assert "warm" in ex.check_cold_users(1566, 0.2, 1566 - 313).message
    assert ex.check_bias_transfer(lambda mu, bi, bu: mu + bi + bu)
    assert "bias baseline" in ex.check_bias_transfer(lambda mu, bi, bu: mu + bi).message
    assert "same score" in ex.check_bias_transfer(lambda mu, bi, bu: np.full(3, mu + bu)).message


def test_mapping_upload_floats():
    assert ex.check_mapping_upload_floats(16, 18 * 17)
    assert "A alone" in ex.check_mapping_upload_floats(16, 17 * 17).message
    assert "bytes" in ex.check_mapping_upload_floats(16, 4 * 18 * 17).message
    assert "bias as well" in ex.check_mapping_upload_floats(16, 16 * 16).message


def _step(A, w, x, y, lr, transpose=False, scale=1.0, sign=-1.0, move_w=True):
    r = x @ A + w - y
    grad_a = np.outer(r, x) if transpose else np.outer(x, r)
    return (A + sign * lr * scale * 2 / len(x) * grad_a,
            w + sign * lr * scale * 2 / len(x) * r if move_w else w)


@pytest.mark.parametrize("changes, hint", [
    ({}, None), ({"transpose": True}, "transposed"), ({"sign": 1.0}, "uphill"),
    ({"scale": 4.0}, "mean"), ({"scale": 0.5}, "factor 2"), ({"move_w": False}, "w is a parameter"),
])
def test_mapping_step_checker_accepts_the_step_and_names_the_typical_mistakes(changes, hint):
    feedback = ex.check_mapping_step(lambda A, w, x, y, lr: _step(A, w, x, y, lr, **changes))
    assert bool(feedback) is (hint is None)
    assert hint is None or hint in feedback.message
    assert "raised" in ex.check_mapping_step(lambda A, w, x, y, lr: 1 / 0).message
    assert "shape" in ex.check_mapping_step(lambda A, w, x, y, lr: (A[0], w)).message


def test_cold_prediction_checker_agrees_with_the_device_side_helpers_and_names_the_typical_mistakes():
    from helpers import fedcrossdomain as fx

    def right(mu, items, x, mapping):
        # the helpers' path: map on the device, then score every item (unclipped)
        store = fx.fed.ClientStore(x[None, :-1].astype(np.float32), x[None, -1].astype(np.float32))
        p, b = fx.map_on_device(mapping, store, np.array([0]))
        return mu + b[0] + items[:, -1] + items[:, :-1] @ p[0]

    assert ex.check_cold_prediction(right)
    wrong = {
        "book": lambda mu, items, x, m: mu + x[-1] + items[:, -1] + items[:, :-1] @ x[:-1],
        "not the items": lambda mu, items, x, m: (lambda q: mu + x[-1] + q[:, -1] + q[:, :-1] @ x[:-1])(items @ m[:-1] + m[-1]),
        "offset w": lambda mu, items, x, m: (lambda y: mu + y[-1] + items[:, -1] + items[:, :-1] @ y[:-1])(x @ m[:-1]),
        "music bias b": lambda mu, items, x, m: (lambda y: mu + items[:, -1] + items[:, :-1] @ y[:-1])(x @ m[:-1] + m[-1]),
        "album's bias": lambda mu, items, x, m: (lambda y: mu + y[-1] + items[:, :-1] @ y[:-1])(x @ m[:-1] + m[-1]),
        "global mean": lambda mu, items, x, m: (lambda y: y[-1] + items[:, -1] + items[:, :-1] @ y[:-1])(x @ m[:-1] + m[-1]),
    }
    for hint, fn in wrong.items():
        feedback = ex.check_cold_prediction(fn)
        assert not feedback and hint in feedback.message, hint
    assert "shape" in ex.check_cold_prediction(lambda mu, items, x, m: np.zeros(2)).message


def test_class_mean_head():
    def pooled(sums, counts):
        means = sums.sum(axis=0) / counts.sum(axis=0)[:, None]
        return means.T, -0.5 * (means**2).sum(axis=1)

    assert ex.check_class_mean_head(pooled)
    unweighted = lambda s, c: (np.nanmean(np.where(c[:, :, None] > 0, s / np.maximum(c, 1)[:, :, None], np.nan), axis=0).T,
                               -0.5 * (np.nanmean(np.where(c[:, :, None] > 0, s / np.maximum(c, 1)[:, :, None], np.nan),
                                                  axis=0)**2).sum(axis=1))
    for fn, hint in [(lambda s, c: (pooled(s, c)[0].T, pooled(s, c)[1]), "shape (d, C)"),
                     (unweighted, "Add up the sums and the counts first"),
                     (lambda s, c: (s.sum(axis=0).T, pooled(s, c)[1]), "divide each class's sum"),
                     (lambda s, c: (pooled(s, c)[0], 2 * pooled(s, c)[1]), "factor ½"),
                     (lambda s, c: (pooled(s, c)[0], -pooled(s, c)[1]), "sign"),
                     (lambda s, c: (pooled(s, c)[0], np.zeros(3)), "−½‖μ_c‖²"),
                     (lambda s, c: 1 / 0, "ZeroDivisionError")]:
        feedback = ex.check_class_mean_head(fn)
        assert not feedback and hint in feedback.message, (hint, feedback)


def test_topk_bytes_and_quantise():
    assert ex.check_topk_bytes(50, 0.01, 8 * math.ceil(0.01 * 33 * 50))
    assert "position" in ex.check_topk_bytes(50, 0.01, 4 * math.ceil(0.01 * 33 * 50)).message
    assert "round k *up*" in ex.check_topk_bytes(50, 0.01, 8 * math.floor(0.01 * 33 * 50)).message

    def quantise(v):
        s = np.abs(v).max() / 127
        return s, np.round(v / s).astype(np.int8)

    assert ex.check_quantise(quantise)
    assert "127" in ex.check_quantise(lambda v: (np.abs(v).max() / 255, np.round(v / (np.abs(v).max() / 255)))).message
    assert "truncated" in ex.check_quantise(lambda v: (np.abs(v).max() / 127, np.trunc(v / (np.abs(v).max() / 127)))).message


def test_epsilon_and_clip():
    from helpers.privacy import epsilon

    assert ex.check_epsilon(1.0, 0.08, 100, 1e-5, epsilon(1.0, 0.08, 100, 1e-5, "rdp"))
    assert "PLD" in ex.check_epsilon(1.0, 0.08, 100, 1e-5, epsilon(1.0, 0.08, 100, 1e-5, "pld")).message
    assert "one round" in ex.check_epsilon(1.0, 0.08, 100, 1e-5, epsilon(1.0, 0.08, 1, 1e-5, "rdp")).message
    assert ex.check_clip(lambda u, c: u * min(1.0, c / np.linalg.norm(u)))
    assert "each coordinate" in ex.check_clip(lambda u, c: np.clip(u, -c, c)).message
    assert "never up" in ex.check_clip(lambda u, c: u * c / np.linalg.norm(u)).message


def test_table_download_and_pooled_rmse():
    mb = 4 * 9742 * 33 * 4 / 1e6
    assert ex.check_table_download_mb(4, 9742, 32, mb)
    assert "d + 1" in ex.check_table_download_mb(4, 9742, 32, 4 * 9742 * 32 * 4 / 1e6).message
    assert "every node" in ex.check_table_download_mb(4, 9742, 32, mb / 4).message
    assert "MiB" in ex.check_table_download_mb(4, 9742, 32, mb * 1e6 / 2**20).message
    sums, counts = [10.0, 90.0], [20, 60]
    assert ex.check_pooled_rmse(sums, counts, math.sqrt(100 / 80))
    assert "mean of the nodes" in ex.check_pooled_rmse(sums, counts, (math.sqrt(0.5) + math.sqrt(1.5)) / 2).message
    assert "square root" in ex.check_pooled_rmse(sums, counts, 100 / 80).message
    assert f"{math.sqrt(100 / 80):.4f}" not in ex.check_pooled_rmse(sums, counts, 3.0).message


def test_feedback_never_contains_the_reference_value():
    reference = ex.wrong_loss_floor(9742)
    assert f"{reference:.4f}" not in ex.check_wrong_loss_floor(9742, 9.0).message
    assert f"{8 * math.ceil(0.01 * 33 * 50)}" not in ex.check_topk_bytes(50, 0.01, 1).message


# ---------------------------------------------------------------- federated softmax ranking


def test_fedsgd_step_checker_accepts_the_step_and_names_the_typical_mistakes():
    def right(theta, gradients, counts, lr):
        weights = np.array(counts, float) / sum(counts)
        return theta - lr * sum(w * g for w, g in zip(weights, gradients))

    assert ex.check_fedsgd_step(right).correct
    uphill = ex.check_fedsgd_step(lambda t, g, n, lr: 2 * t - right(t, g, n, lr))
    assert not uphill.correct and "against it" in uphill.message
    per_client = ex.check_fedsgd_step(lambda t, g, n, lr: t - lr * np.mean(g, axis=0))
    assert not per_client.correct and "averaged over clients, not examples" in per_client.message


def test_sampled_softmax_checker_accepts_the_loss_and_names_the_typical_mistakes():
    def right(scores, own, negatives, correction):
        logits = np.concatenate([scores[own], scores[negatives] - correction])
        return float(np.mean(np.log(np.exp(logits).sum()) - scores[own]))

    assert ex.check_sampled_softmax_loss(right).correct
    def no_correction(scores, own, negatives, correction):
        return right(scores, own, negatives, np.zeros_like(correction))
    missing = ex.check_sampled_softmax_loss(no_correction)
    assert not missing.correct and "log-Q correction" in missing.message
    flipped = ex.check_sampled_softmax_loss(lambda s, o, n, c: right(s, o, n, -c))
    assert not flipped.correct and "other way" in flipped.message
    summed = ex.check_sampled_softmax_loss(lambda s, o, n, c: len(o) * right(s, o, n, c))
    assert not summed.correct and "do not sum" in summed.message


def test_hit_at_10_checker_accepts_the_protocol_and_names_the_typical_mistakes():
    def right(scores, train_items, held_out):
        others = np.ones(len(scores), bool)
        others[train_items] = False
        others[held_out] = False
        return int(np.sum(scores[others] >= scores[held_out])) < 10

    assert ex.check_hit_at_10(right).correct
    def with_training_items(scores, train_items, held_out):
        return right(scores, np.array([], int), held_out)
    included = ex.check_hit_at_10(with_training_items)
    assert not included.correct and "training items are still among the candidates" in included.message
    def optimistic(scores, train_items, held_out):
        others = np.ones(len(scores), bool)
        others[train_items] = False
        others[held_out] = False
        return int(np.sum(scores[others] > scores[held_out])) < 10
    ties = ex.check_hit_at_10(optimistic)
    assert not ties.correct and "ties against it" in ties.message
