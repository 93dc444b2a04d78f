"""Checkers for the lessons' exercises.

Each checker takes the learner's answer (a number or a function they wrote) and returns a
:class:`Feedback`: "correct", or a specific hint for the typical mistake it recognises —
never the solution itself. In a notebook the feedback shows as one Markdown line.

Checkers compute the reference themselves (from the formula, or from the same helpers the
lesson uses), so they stay right when the data change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Feedback:
    """The outcome of a check: ``correct`` and one line for the learner."""

    correct: bool
    message: str

    def _repr_markdown_(self) -> str:
        return ("✅ **Correct.** " if self.correct else "❌ **Not yet.** ") + self.message

    def __str__(self) -> str:
        return ("Correct. " if self.correct else "Not yet. ") + self.message

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.correct


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isfinite(a) and math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def _number(answer) -> float | None:
    try:
        return float(answer)
    except (TypeError, ValueError):
        return None


def _diagnose(answer, reference: float, mistakes: list[tuple[float, str]], rel: float = 1e-3,
              correct: str = "That is the value.") -> Feedback:
    """Compare a numeric answer with the reference; if it equals a known wrong value, give that hint."""
    value = _number(answer)
    if value is None:
        return Feedback(False, f"give a number (got {type(answer).__name__}).")
    if _close(value, reference, rel):
        return Feedback(True, correct)
    for wrong, hint in mistakes:
        if _close(value, wrong, rel):
            return Feedback(False, hint)
    direction = "too large" if value > reference else "too small"
    return Feedback(False, f"{value:.6g} is {direction}; go back to the formula in the lesson and check each factor.")


# ----------------------------------------------------------------------------- lesson 01

def check_softmax(softmax_fn: Callable[[np.ndarray], np.ndarray]) -> Feedback:
    """Exercise 01.1: ``softmax_fn(scores)`` for a 1-D array of scores returns P(c) for every item."""
    cases = [np.array([2.0, 1.0, 0.1]), np.array([-3.0, 0.0, 3.0, 0.5]), np.array([1000.0, 1001.0, 999.0])]
    for scores in cases:
        with np.errstate(all="ignore"):
            feedback = _softmax_case(softmax_fn, scores)
        if feedback is not None:
            return feedback
    return Feedback(True, "your softmax matches exp(s_c) / Σ exp(s_c') and survives large scores.")


def _softmax_case(softmax_fn, scores: np.ndarray) -> Feedback | None:
    """The hint for the first thing ``softmax_fn`` gets wrong on ``scores``, or None when it is right."""
    try:
        got = np.asarray(softmax_fn(scores.copy()), dtype=float)
    except Exception as error:  # the learner's code may raise anything
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    expected = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    if got.shape != scores.shape:
        return Feedback(False, f"return one probability per score: shape {scores.shape}, got {got.shape}.")
    if not np.all(np.isfinite(got)):
        return Feedback(False, "large scores overflow exp(): subtract the largest score first — it cancels "
                               "in the ratio and keeps exp() ≤ 1.")
    if np.allclose(got, np.exp(scores)):
        return Feedback(False, "you returned exp(s) — divide by the sum over all items so the probabilities add up to 1.")
    if not np.isclose(got.sum(), 1.0):
        return Feedback(False, f"your probabilities add up to {got.sum():.4g}, not 1: normalise by the sum over all items.")
    if np.allclose(got, np.full_like(got, 1 / len(got))):
        return Feedback(False, "every item gets the same probability: the numerator must be exp of *that item's* score.")
    if not np.allclose(got, expected, atol=1e-9):
        return Feedback(False, "the probabilities do not follow exp(s_c) / Σ exp(s_c'); check the numerator and the sum.")
    return None


def wrong_loss_floor(n_classes: int) -> float:
    """The smallest cross-entropy a second softmax allows: log(1 + (C − 1)/e), in nats."""
    return math.log(1 + (n_classes - 1) / math.e)


def check_wrong_loss_floor(n_classes: int, answer) -> Feedback:
    """Exercise 01.2: the floor of the loss when softmax outputs are fed to ``from_logits=True``."""
    reference = wrong_loss_floor(n_classes)
    return _diagnose(answer, reference, [
        (math.log(n_classes), "that is log C, a blind guess — the floor is lower: the right class can get at most "
                              "e/(e + C − 1) of the second softmax."),
        (math.log2(1 + (n_classes - 1) / math.e), "that is in bits; Keras' loss is in nats (natural log)."),
        (math.log(1 + n_classes / math.e), "close: only the C − 1 *other* classes sit at the bottom score."),
        (math.log(n_classes / math.e), "the right class keeps its e in the denominator too: e/(e + C − 1)."),
    ], correct=f"the loss can never go below {reference:.4f} nats, however good the model.")


# ----------------------------------------------------------------------------- lesson 02

def check_sgd_step(step_fn: Callable[[np.ndarray, np.ndarray, float], np.ndarray]) -> Feedback:
    """Exercise 02.1: ``step_fn(theta, gradient, learning_rate)`` returns θ − η∇L (no in-place tricks needed)."""
    theta, gradient, rate = np.array([1.0, -2.0, 0.5]), np.array([0.5, 1.0, -4.0]), 0.1
    try:
        got = np.asarray(step_fn(theta.copy(), gradient.copy(), rate), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if np.allclose(got, theta - rate * gradient):
        return Feedback(True, "θ ← θ − η∇L: a step downhill.")
    if np.allclose(got, theta + rate * gradient):
        return Feedback(False, "your update has the wrong sign: it climbs the loss. Step *against* the gradient.")
    if np.allclose(got, theta - gradient):
        return Feedback(False, "the learning rate is missing: scale the gradient by η.")
    if np.allclose(got, -rate * gradient):
        return Feedback(False, "you returned the step only; add it to the current θ.")
    return Feedback(False, "the result is not θ − η·gradient; check each term.")


def check_critical_learning_rate(feature: np.ndarray, answer) -> Feedback:
    """Exercise 02.2: the largest stable rate 2/λ_max for L(a, b) = mean((r − a − b·m)²) on ``feature`` m."""
    x = np.stack([np.ones_like(feature, dtype=float), np.asarray(feature, dtype=float)], axis=1)
    eigenvalues = np.linalg.eigvalsh(2.0 * x.T @ x / len(feature))
    reference = 2.0 / eigenvalues.max()
    return _diagnose(answer, reference, [
        (1.0 / eigenvalues.max(), "that is 1/λ_max: gradient descent on a quadratic converges up to 2/λ_max."),
        (2.0 / eigenvalues.min(), "use the *largest* eigenvalue: the steepest direction diverges first."),
        (2.0 / np.linalg.eigvalsh(x.T @ x / len(feature)).max(), "the Hessian of a mean *squared* error has a factor 2: H = 2XᵀX/n."),
        (2.0 / np.linalg.eigvalsh(2.0 * x.T @ x).max(), "divide XᵀX by n: the loss is a mean over the ratings, not a sum."),
    ], correct="above it the steepest direction overshoots further every step.")


def check_summed_learning_rate(mean_rate: float, n: int, answer) -> Feedback:
    """Exercise 02.3: the rate for a summed loss that takes the same step as ``mean_rate`` on the mean loss."""
    return _diagnose(answer, mean_rate / n, [
        (mean_rate * n, "the summed gradient is n times *larger*, so its rate must be n times smaller."),
        (mean_rate, "the two losses differ by the factor n; the same rate makes an n-times larger step."),
    ], correct="η_sum = η_mean / n gives the same update.")


# ----------------------------------------------------------------------------- lesson 03

def check_fedavg_aggregate(aggregate_fn: Callable[[list, list], np.ndarray]) -> Feedback:
    """Exercise 03.1: ``aggregate_fn(deltas, num_examples)`` → Σ_k (n_k / Σ n) Δ_k."""
    deltas = [np.array([1.0, 0.0]), np.array([0.0, 2.0]), np.array([4.0, -1.0])]
    counts = [10, 30, 60]
    try:
        got = np.asarray(aggregate_fn([d.copy() for d in deltas], list(counts)), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    weights = np.array(counts, dtype=float) / sum(counts)
    if np.allclose(got, sum(w * d for w, d in zip(weights, deltas))):
        return Feedback(True, "each client counts in proportion to its examples, n_k / n.")
    if np.allclose(got, np.mean(deltas, axis=0)):
        return Feedback(False, "you averaged over clients, not examples: weight each Δ_k by n_k / Σ n.")
    if np.allclose(got, sum(c * d for c, d in zip(counts, deltas))):
        return Feedback(False, "you weighted by n_k but did not divide by Σ n: the weights must add up to 1.")
    if np.allclose(got, np.sum(deltas, axis=0)):
        return Feedback(False, "you summed the updates: FedAvg takes their weighted *mean*.")
    return Feedback(False, "the result is not Σ_k (n_k / Σ n) Δ_k; check the weights.")


def upload_bytes(num_examples: np.ndarray, dim: int) -> float:
    """Touched-rows upload of a round in bytes: each rated item's index (4 B) and d + 1 float32 values."""
    return float(np.sum(num_examples)) * (4 + 4 * (dim + 1))


def check_upload_mb(num_examples: np.ndarray, dim: int, answer) -> Feedback:
    """Exercise 03.2: MB (10⁶ bytes) the sampled clients upload in one round with the touched-rows protocol.

    Args:
        num_examples: (K,) ratings (= rated items) of each sampled client.
        dim: embedding size d.
    """
    reference = upload_bytes(num_examples, dim) / 1e6
    rows = float(np.sum(num_examples))
    return _diagnose(answer, reference, [
        (rows * 4 * (dim + 1) / 1e6, "each row also carries its 4-byte item index — that index is what lesson 10's leak reads."),
        (rows * (4 + 4 * dim) / 1e6, "each row has d + 1 values: the item vector and the item bias."),
        (8 * reference, "that is megabits: there are 8 bits in a byte."),
        (reference * 1e6 / 2 ** 20, "that is MiB (2²⁰ bytes); the course counts MB as 10⁶ bytes."),
        (2 * reference, "count the upload only; the download is the same size again."),
    ], rel=2e-3, correct=f"{reference:.3f} MB up this round.")


# ----------------------------------------------------------------------------- federated softmax ranking

def check_fedsgd_step(step_fn: Callable[[np.ndarray, list, list, float], np.ndarray]) -> Feedback:
    """Exercise: ``step_fn(theta, gradients, num_examples, lr)`` → θ − η Σ_k (n_k / Σ n) ∇L_k, the FedSGD
    server step (one full-batch gradient per client, weighted by its examples)."""
    rng = np.random.default_rng(4)
    theta = rng.normal(size=(5, 3))
    gradients = [rng.normal(size=(5, 3)) for _ in range(3)]
    counts, lr = [10, 30, 60], 0.5
    try:
        got = np.asarray(step_fn(theta.copy(), [g.copy() for g in gradients], list(counts), lr), dtype=float)
    except Exception as error:  # the learner's code may raise anything
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if got.shape != theta.shape:
        return Feedback(False, f"return the new θ, shape {theta.shape}; got shape {got.shape}.")
    weights = np.array(counts, float) / sum(counts)
    mean_gradient = sum(w * g for w, g in zip(weights, gradients))
    if np.allclose(got, theta - lr * mean_gradient):
        return Feedback(True, "θ ← θ − η Σ_k (n_k/n) ∇L_k: the gradient of the loss over all the round's examples.")
    mistakes = [
        (theta + lr * mean_gradient, "you stepped up the gradient: descent moves against it, θ − η ∇L."),
        (theta - lr * np.mean(gradients, axis=0), "you averaged over clients, not examples: a client with more "
                                                 "interactions holds more of the loss, so weight ∇L_k by n_k / Σ n."),
        (theta - lr * sum(c * g for c, g in zip(counts, gradients)), "the weights n_k must be divided by Σ n so that "
                                                                     "they add up to 1."),
        (theta - lr * np.sum(gradients, axis=0), "you summed the gradients unweighted: weight each by n_k / Σ n."),
        (theta - mean_gradient, "the learning rate η is missing."),
        (-lr * mean_gradient, "return the new θ, not only the step."),
    ]
    for wrong, hint in mistakes:
        if np.allclose(got, wrong):
            return Feedback(False, hint)
    return Feedback(False, "the result is not θ − η Σ_k (n_k / Σ n) ∇L_k; check the weights and the sign.")


def sampled_softmax_loss(scores: np.ndarray, own: np.ndarray, negatives: np.ndarray, correction: np.ndarray) -> float:
    """The reference: mean over the client's items i of −log softmax over own ∪ negatives, the negatives'
    scores lowered by their log-Q correction log(m · Q_k(c)); in nats."""
    logits = np.concatenate([scores[own], scores[negatives] - correction])
    log_z = logits.max() + np.log(np.exp(logits - logits.max()).sum())
    return float(np.mean(log_z - scores[own]))


def _log_softmax_mean(logits: np.ndarray, positive: np.ndarray) -> float:
    log_z = logits.max() + np.log(np.exp(logits - logits.max()).sum())
    return float(np.mean(log_z - positive))


def check_sampled_softmax_loss(loss_fn: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]) -> Feedback:
    """Exercise: ``loss_fn(scores, own, negatives, correction)`` → the sampled-softmax loss of one client
    (:func:`sampled_softmax_loss`): ``scores`` (I,) of every item, ``own`` its item indices, ``negatives``
    m sampled item indices, ``correction`` (m,) their log(m · Q_k(c))."""
    rng = np.random.default_rng(7)
    scores = rng.normal(size=40) * 2
    own, negatives = np.array([3, 8, 21]), np.array([0, 5, 12, 30, 33])
    correction = np.log(len(negatives) * rng.dirichlet(np.ones(len(negatives))) * 0.5)
    try:
        got = float(loss_fn(scores.copy(), own.copy(), negatives.copy(), correction.copy()))
    except Exception as error:  # the learner's code may raise anything
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    reference = sampled_softmax_loss(scores, own, negatives, correction)
    if _close(got, reference, 1e-6):
        return Feedback(True, "the client's items against m corrected negatives: a loss over n_k + m rows, not I.")
    own_scores = scores[own]
    mistakes = [
        (_log_softmax_mean(np.concatenate([own_scores, scores[negatives]]), own_scores),
         "the negatives' scores need the log-Q correction: subtract log(m · Q_k(c)), or popular negatives, drawn "
         "often, count as if each stood for only itself."),
        (_log_softmax_mean(np.concatenate([own_scores, scores[negatives] + correction]), own_scores),
         "the correction goes the other way: a negative stands for 1/(m · Q_k(c)) items, so its score is lowered by "
         "log(m · Q_k(c))."),
        (_log_softmax_mean(scores, own_scores), "that is the full softmax over all items: the sampled loss looks only "
                                                "at the client's own items and the m negatives."),
        (len(own) * reference, "average over the client's items (the mean cross-entropy), do not sum."),
        (-reference, "the loss is −log P, a positive number of nats: check the sign."),
        (float(np.mean(np.log(1 + np.exp(-own_scores)))), "this is a per-item sigmoid loss; the exercise asks for a "
                                                         "softmax over the candidates."),
    ]
    for wrong, hint in mistakes:
        if _close(got, wrong, 1e-6):
            return Feedback(False, hint)
    return Feedback(False, f"{got:.6g} nats is not the sampled-softmax loss; candidates are own ∪ negatives, and only "
                           "the negatives get the correction.")


def check_hit_at_10(hit_fn: Callable[[np.ndarray, np.ndarray, int], bool]) -> Feedback:
    """Exercise: ``hit_fn(scores, train_items, held_out)`` → whether the held-out item is in the top 10 of
    the items the user has not interacted with (lesson 01's protocol; ties count against it)."""
    cases = []
    scores = np.arange(30, dtype=float)[::-1].copy()           # item 0 best … item 29 worst
    cases.append((scores, np.arange(0, 8), 15, True))         # 8 better items are training items: rank 7 → hit
    cases.append((scores, np.array([20]), 12, False))         # 12 better items, none excluded → miss
    tied = np.zeros(30)
    cases.append((tied, np.array([1]), 4, False))             # every item tied: pessimistic → last → miss
    try:
        got = [bool(hit_fn(s.copy(), t.copy(), h)) for s, t, h, _ in cases]
    except Exception as error:  # the learner's code may raise anything
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    expected = [e for *_, e in cases]
    if got == expected:
        return Feedback(True, "training items are left out of the ranking, and a tie never helps the held-out item.")
    if got[0] is False and got[1:] == expected[1:]:
        return Feedback(False, "the user's training items are still among the candidates: exclude them before ranking "
                               "(they are known interactions, not recommendations).")
    if got[2] is True:
        return Feedback(False, "with every score tied the held-out item must count as ranked last (ties against it), "
                               "or a model that says nothing would score well.")
    return Feedback(False, "count the items (other than training items) scoring at least as high as the held-out "
                           "one; it is a hit when fewer than 10 do.")


# ----------------------------------------------------------------------------- lesson 05

def check_head_parameters(features: int, classes: int, answer) -> Feedback:
    """Exercise 05.1: trainable numbers of a new dense head from ``features`` to ``classes`` logits."""
    return _diagnose(answer, features * classes + classes, [
        (features * classes, "a dense layer also has one bias per class (b_target)."),
        ((features + 1) * (classes + 1), "the bias is one per *output*, not an extra input and output."),
    ], correct="weights plus one bias per class.")


def check_low_rank_parameters(kernel_shape: tuple[int, int, int, int], rank: int, answer) -> Feedback:
    """Exercise 05.2: trainable numbers of a rank-r W = AB for a conv kernel of shape (kh, kw, c_in, c_out),
    with A of shape (kh·kw·c_in, r) and B of shape (r, c_out)."""
    kh, kw, c_in, c_out = kernel_shape
    rows = kh * kw * c_in
    return _diagnose(answer, rank * (rows + c_out), [
        (rows * c_out, "that is the full W; a rank-r W is stored as two thin matrices A and B."),
        (rank * rows * c_out, "A and B are multiplied, not their sizes: count A's and B's entries and add them."),
        (rank * (c_in + c_out), "A maps the whole receptive field, kh·kw·c_in numbers, not only the channels."),
    ], correct="r·(kh·kw·c_in + c_out) numbers instead of kh·kw·c_in·c_out.")


def check_additive_kernel(kernel_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]) -> Feedback:
    """Exercise 05.3: ``kernel_fn(kernel_source, a, b)`` → the kernel θ_source + W of a rank-r additive
    convolution: K_s + reshape(A B, K_s.shape), with K_s (kh, kw, c_in, c_out), A (kh·kw·c_in, r), B (r, c_out).

    The case is not square (kh = 3, kw = 2, c_in = 4, c_out = 5, r = 2), so a reshape in the wrong order
    or along the wrong axes gives different numbers, not the same ones by luck.
    """
    rng = np.random.default_rng(5)
    kernel = rng.normal(size=(3, 2, 4, 5))
    a, b = rng.normal(size=(3 * 2 * 4, 2)), rng.normal(size=(2, 5))
    try:
        got = np.asarray(kernel_fn(kernel.copy(), a.copy(), b.copy()), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    delta = (a @ b).reshape(kernel.shape)
    if got.shape != kernel.shape:
        return Feedback(False, f"return a kernel of the source kernel's shape {kernel.shape}, got {got.shape}: "
                               "A B is (kh·kw·c_in, c_out) and has to be reshaped.")
    if np.allclose(got, kernel + delta):
        return Feedback(True, "K_s + reshape(A B): the source kernel plus a change that starts at zero.")
    if np.allclose(got, delta):
        return Feedback(False, "that is W alone, the change: θ_target = θ_source + W keeps the source kernel in it.")
    if np.allclose(got, kernel):
        return Feedback(False, "that is the source kernel unchanged: add W = A B, reshaped to the kernel's shape.")
    if np.allclose(got, kernel + (a @ b).reshape(kernel.shape, order="F")):
        return Feedback(False, "A's rows run over the receptive field in the kernel's own order (kh, then kw, then "
                               "c_in): reshape row-major, NumPy's default, not column-major.")
    return Feedback(False, "compute W = A B (a matrix product, (kh·kw·c_in) × c_out), reshape it to the kernel's "
                           "shape, and add it to the source kernel.")


# ----------------------------------------------------------------------------- lesson 06

def check_cold_users(n_overlap: int, beta: float, answer) -> Feedback:
    """Exercise 06.1: how many overlapping users the cold-start protocol makes cold at share β."""
    reference = int(round(beta * n_overlap))
    mistakes = [(n_overlap - reference, "that is the number of *warm* users; β is the share made cold.")]
    if math.floor(beta * n_overlap) != reference:
        mistakes.append((math.floor(beta * n_overlap), "the protocol rounds β·N to the nearest user."))
    return _diagnose(answer, reference, mistakes, rel=1e-9, correct="β of the users who rate in both domains.")


def check_bias_transfer(predict_fn: Callable[[float, np.ndarray, float], np.ndarray]) -> Feedback:
    """Exercise 06.2: ``predict_fn(mu_target, item_bias_target, user_bias_source)`` → a cold user's predictions
    f_target = f_source + b_target: μ_t + b_i + b_u^s for every target item."""
    mu, item_bias, user_bias = 3.6, np.array([0.4, -0.2, 0.0]), 0.3
    try:
        got = np.asarray(predict_fn(mu, item_bias.copy(), user_bias), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if np.allclose(got, mu + item_bias + user_bias):
        return Feedback(True, "the user's source bias on top of the target's item biases.")
    if np.allclose(got, mu + item_bias):
        return Feedback(False, "that is the bias baseline: add the user's source-domain bias b_u^s — that is what transfers.")
    if np.allclose(got, mu + user_bias):
        return Feedback(False, "every album gets the same score: add the target's item bias b_i.")
    if np.allclose(got, item_bias + user_bias):
        return Feedback(False, "the target's global mean μ_t is missing.")
    return Feedback(False, "the prediction is μ_t + b_i + b_u^s for every item; check each term.")


# ----------------------------------------------------------------------------- lesson 07

def check_class_mean_head(head_fn: Callable[[np.ndarray, np.ndarray], tuple]) -> Feedback:
    """Exercise 07.1: ``head_fn(sums, counts)`` → (W (d, C), b (C,)) of the server's side of the class-mean
    head round (:func:`helpers.federated_vision.nearest_mean_head`), on clients of unequal sizes (so an
    unweighted mean of client means is wrong)."""
    from helpers.federated_vision import nearest_mean_head

    rng = np.random.default_rng(7)
    counts = np.array([[30, 0, 2], [1, 12, 5], [4, 3, 20]], dtype=float)          # 3 clients × 3 classes
    sums = rng.normal(0.5, 1.0, (3, 3, 4)) * counts[:, :, None]                    # d = 4
    want_w, want_b = nearest_mean_head(sums, counts)
    try:
        w, b = head_fn(sums.copy(), counts.copy())
        w, b = np.asarray(w, float), np.asarray(b, float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if w.shape == want_w.T.shape and w.shape != want_w.shape:
        return Feedback(False, f"W maps d features to C logits: shape (d, C) = {want_w.shape}, got {w.shape}.")
    if w.shape != want_w.shape or b.shape != want_b.shape:
        return Feedback(False, f"return W of shape (d, C) = {want_w.shape} and b of shape (C,) = {want_b.shape}; "
                               f"got {w.shape} and {b.shape}.")
    if not np.allclose(w, want_w):
        with np.errstate(invalid="ignore", divide="ignore"):
            client_means = sums / counts[:, :, None]
        unweighted = np.nanmean(np.where(counts[:, :, None] > 0, client_means, np.nan), axis=0).T
        if np.allclose(w, unweighted):
            return Feedback(False, "you averaged the clients' own class means: a client with 1 image of a class "
                                   "then weighs as much as one with 30. Add up the sums and the counts first.")
        if np.allclose(w, sums.sum(axis=0).T):
            return Feedback(False, "those are the pooled sums: divide each class's sum by its pooled count.")
        return Feedback(False, "W's column c should be class c's mean feature vector over every client's images.")
    if not np.allclose(b, want_b):
        if np.allclose(b, -2 * want_b) or np.allclose(b, 2 * want_b):
            return Feedback(False, "the bias is −½‖μ_c‖²: check the factor ½.")
        if np.allclose(b, -want_b):
            return Feedback(False, "check the bias's sign: −½‖f − μ_c‖² expands to f·μ_c − ½‖μ_c‖² + (a term equal for every class).")
        return Feedback(False, "W is right; the bias of class c is −½‖μ_c‖², from expanding −½‖f − μ_c‖².")
    return Feedback(True, "the head scores each class by −½‖f − μ_c‖² up to a shared term: the nearest class mean wins.")


# ----------------------------------------------------------------------------- lesson 09 (what federating costs)

def topk_upload_bytes(rows: int, fraction: float, dim: int = 32) -> int:
    """Top-k upload of one client in bytes: k = ⌈f·(d + 1)·rows⌉ entries, each a 4-byte position and a float32."""
    return 8 * math.ceil(fraction * (dim + 1) * rows)


def check_topk_bytes(rows: int, fraction: float, answer, dim: int = 32) -> Feedback:
    """Exercise 09.1: bytes a client with ``rows`` rated items uploads with top-k at share ``fraction``."""
    entries = fraction * (dim + 1) * rows
    mistakes = [(4 * math.ceil(entries), "each kept entry needs its position (4 bytes) as well as its value (4 bytes).")]
    if math.floor(entries) != math.ceil(entries):
        mistakes.append((8 * math.floor(entries), "round k *up*: k = ⌈f·(d + 1)·m⌉, at least one entry."))
    mistakes.append((8 * math.ceil(fraction * dim * rows), "each row has d + 1 values: the vector and the bias."))
    return _diagnose(answer, topk_upload_bytes(rows, fraction, dim), mistakes, rel=1e-9, correct="8 bytes per kept entry.")


def check_quantise(quantise_fn: Callable[[np.ndarray], tuple[float, np.ndarray]]) -> Feedback:
    """Exercise 09.2: ``quantise_fn(v)`` → (scale s, int8 codes q) with s = max|v| / 127 and q = round(v / s),
    so that |v − s·q| ≤ s/2 for every value."""
    v = np.array([0.5, -1.27, 0.0068, 1.0, -0.255])
    try:
        scale, codes = quantise_fn(v.copy())
        codes = np.asarray(codes)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    scale = float(scale)
    if codes.shape != v.shape:
        return Feedback(False, f"return one code per value: shape {v.shape}, got {codes.shape}.")
    if not np.isclose(scale, np.abs(v).max() / 127):
        if np.isclose(scale, np.abs(v).max() / 255) or np.isclose(scale, (v.max() - v.min()) / 255):
            return Feedback(False, "a signed byte holds −127…127: the scale is max|v| / 127.")
        return Feedback(False, "the scale should map the largest |v| to 127: s = max|v| / 127.")
    if np.any(np.abs(codes) > 127):
        return Feedback(False, "codes must fit in a signed byte, −127…127.")
    if np.max(np.abs(v - scale * codes)) > scale / 2 + 1e-12:
        if np.allclose(codes, np.trunc(v / scale)):
            return Feedback(False, "you truncated: round to the nearest code, or the error can reach a whole step s.")
        return Feedback(False, "decoding s·q is off by more than s/2 somewhere: round v / s to the nearest integer.")
    return Feedback(True, "every value is within s/2 of its decoded code, at one byte per value.")


# ----------------------------------------------------------------------------- lesson 08 (federated cold start)

def check_mapping_upload_floats(dim: int, answer) -> Feedback:
    """Exercise 08.1: floats one client uploads for the mapping per round at MF dimension d: the whole
    table, A (d + 1, d + 1) and w (d + 1,), i.e. (d + 2)(d + 1)."""
    width = dim + 1
    return _diagnose(answer, (width + 1) * width, [
        (width * width, "that is A alone: the offset w is trained and sent too (one more row)."),
        (dim * dim, "x and y carry the user's bias as well as p: D = d + 1, and w adds a row."),
        ((dim + 1) * dim, "x and y carry the user's bias as well as p: D = d + 1 columns, d + 2 rows."),
        (4 * (width + 1) * width, "that is bytes (float32); the question counts floats."),
    ], rel=1e-9, correct="the whole (d + 2) × (d + 1) table, every round, whatever the client's data.")


def _mapping_step_reference(A, w, x, y, lr, transpose=False, scale=1.0, sign=-1.0):
    residual = x @ A + w - y
    width = len(x)
    grad_a = np.outer(residual, x) if transpose else np.outer(x, residual)
    return A + sign * lr * scale * (2.0 / width) * grad_a, w + sign * lr * scale * (2.0 / width) * residual


def check_mapping_step(step_fn: Callable[..., tuple]) -> Feedback:
    """Exercise 08.2: ``step_fn(A, w, x, y, lr)`` → (A', w'), one client's gradient step on its own pair,
    L = mean_j (x A + w − y)_j² (no penalty); x, y (D,), A (D, D), w (D,)."""
    rng = np.random.default_rng(8)
    width = 4
    A, w = np.eye(width) + 0.1 * rng.normal(size=(width, width)), 0.1 * rng.normal(size=width)
    x, y, lr = rng.normal(size=width), rng.normal(size=width), 0.3
    try:
        got = step_fn(A.copy(), w.copy(), x.copy(), y.copy(), lr)
        got_a, got_w = (np.asarray(v, dtype=float) for v in got)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error} "
                               "(it should return the pair (A', w')).")
    if got_a.shape != A.shape or got_w.shape != w.shape:
        return Feedback(False, f"return A' with A's shape {A.shape} and w' with w's shape {w.shape}; "
                               f"got {got_a.shape} and {got_w.shape}.")
    def matches(**kind):
        ref_a, ref_w = _mapping_step_reference(A, w, x, y, lr, **kind)
        return np.allclose(got_a, ref_a) and np.allclose(got_w, ref_w)

    if matches():
        return Feedback(True, "the change θ' − θ is what the client sends; the server adds the changes of all clients.")
    if np.allclose(got_a, _mapping_step_reference(A, w, x, y, lr)[0]):
        return Feedback(False, "A is right; w is a parameter too: its gradient is (2/D) r with r = x A + w − y.")
    if matches(transpose=True):
        return Feedback(False, "A's gradient is transposed: ∂L/∂A[i, j] = (2/D) x_i r_j — the row index "
                               "follows x (np.outer(x, r)).")
    if matches(sign=1.0):
        return Feedback(False, "the step goes uphill: subtract η times the gradient.")
    if matches(scale=len(x)):
        return Feedback(False, "the loss is the *mean* over the D coordinates: divide the gradient by D.")
    if matches(scale=0.5):
        return Feedback(False, "the derivative of (x A + w − y)² carries a factor 2.")
    return Feedback(False, "with r = x A + w − y: A' = A − η (2/D) xᵀr and w' = w − η (2/D) r; check each term.")


def check_cold_prediction(predict_fn: Callable[..., np.ndarray]) -> Feedback:
    """Exercise 08.3: ``predict_fn(mu, item_table, x, mapping)`` → a cold user's predicted music rating of
    every item (I,), before clipping: (p, b) = x A + w with the mapping table [A; w] (d + 2, d + 1),
    r̂_i = μ + b + b_i + p · q_i with item_table (I, d + 1) = [q_i, b_i]; x (d + 1,) is [p^s, b^s]."""
    rng = np.random.default_rng(80)
    dim, n_items = 3, 5
    mu, items = 3.6, rng.normal(size=(n_items, dim + 1))
    x = rng.normal(size=dim + 1)
    mapping = np.concatenate([np.eye(dim + 1) + 0.3 * rng.normal(size=(dim + 1, dim + 1)),
                              0.2 * rng.normal(size=(1, dim + 1))])
    try:
        got = np.asarray(predict_fn(mu, items.copy(), x.copy(), mapping.copy()), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if got.shape != (n_items,):
        return Feedback(False, f"return one prediction per music item, shape ({n_items},); got {got.shape}.")

    def score(user, table, mean=mu, user_bias=True, item_bias=True):
        return (mean + (user[-1] if user_bias else 0.0) + (table[:, -1] if item_bias else 0.0)
                + table[:, :-1] @ user[:-1])

    mapped = x @ mapping[:-1] + mapping[-1]
    if np.allclose(got, score(mapped, items)):
        return Feedback(True, "the user's book values, mapped and scored against the global music table, on the device.")
    if np.allclose(got, score(x, items)):
        return Feedback(False, "that scores the *book* vector against music items: map it first, (p, b) = x A + w.")
    if np.allclose(got, score(x, items @ mapping[:-1] + mapping[-1])):
        return Feedback(False, "the mapping turns a user's book values into music values; the item table is "
                               "already music: map x, not the items.")
    if np.allclose(got, score(x @ mapping[:-1], items)):
        return Feedback(False, "the offset w (the table's last row) is part of the mapping: (p, b) = x A + w.")
    if np.allclose(got, score(mapped, items, user_bias=False)):
        return Feedback(False, "the mapped vector's last value is the user's music bias b: add it.")
    if np.allclose(got, score(mapped, items, item_bias=False)):
        return Feedback(False, "each album's bias b_i (the item table's last column) is missing.")
    if np.allclose(got, score(mapped, items, mean=0.0)):
        return Feedback(False, "the global mean μ is missing.")
    return Feedback(False, "r̂_i = μ + b + b_i + p · q_i with (p, b) = x A + w; check each term.")


# ----------------------------------------------------------------------------- lesson 10

def check_epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, answer) -> Feedback:
    """Exercise 10.1: ε of DP-FedAvg by the RDP accountant (``helpers.privacy.epsilon``), within 1%."""
    from helpers.privacy import epsilon

    reference = epsilon(noise_multiplier, sampling_rate, rounds, delta, "rdp")
    return _diagnose(answer, reference, [
        (epsilon(noise_multiplier, sampling_rate, rounds, delta, "pld"), "that is the PLD accountant's ε; the exercise asks for RDP."),
        (epsilon(noise_multiplier, sampling_rate, 1, delta, "rdp"), "that is one round: compose the mechanism over all T rounds."),
        (epsilon(noise_multiplier, 1.0, rounds, delta, "rdp"), "that ignores sampling: each client takes part with probability q only."),
    ], rel=0.01, correct=f"ε ≈ {reference:.2f} at δ = {delta:g}.")


def check_clip(clip_fn: Callable[[np.ndarray, float], np.ndarray]) -> Feedback:
    """Exercise 10.2: ``clip_fn(update, C)`` scales the whole update to L2 norm ≤ C (unchanged if already inside)."""
    big, small, clip = np.array([3.0, 4.0]), np.array([0.03, 0.04]), 1.0
    try:
        got_big = np.asarray(clip_fn(big.copy(), clip), dtype=float)
        got_small = np.asarray(clip_fn(small.copy(), clip), dtype=float)
    except Exception as error:
        return Feedback(False, f"your function raised {type(error).__name__}: {error}")
    if np.allclose(got_big, np.clip(big, -clip, clip)):
        return Feedback(False, "you clipped each coordinate; DP clips the *norm* of the whole update, keeping its direction.")
    if not np.allclose(got_small, small):
        return Feedback(False, "an update already inside the ball must stay as it is: scale by min(1, C/‖Δ‖), never up.")
    if not np.allclose(got_big, big * clip / np.linalg.norm(big)):
        return Feedback(False, "a large update should keep its direction and get norm exactly C: Δ · C/‖Δ‖.")
    return Feedback(True, "Δ · min(1, C/‖Δ‖): direction kept, norm at most C.")


# ----------------------------------------------------------------------------- lesson 11

def check_table_download_mb(nodes: int, n_items: int, dim: int, answer) -> Feedback:
    """Exercise 11.1: MB (10⁶ bytes) the server sends in one round when each of ``nodes`` nodes
    receives the whole item table, I × (d + 1) float32 values (the user ids it adds are left out)."""
    reference = nodes * n_items * (dim + 1) * 4 / 1e6
    return _diagnose(answer, reference, [
        (nodes * n_items * dim * 4 / 1e6, "each item row has d + 1 values: the item vector and the item bias."),
        (n_items * (dim + 1) * 4 / 1e6, "that is one node's copy: every node gets the table."),
        (8 * reference, "that is megabits: there are 8 bits in a byte."),
        (reference * 1e6 / 2 ** 20, "that is MiB (2²⁰ bytes); the course counts MB as 10⁶ bytes."),
    ], correct=f"{reference:.2f} MB down per round, whatever the number of users sampled.")


def pooled_rmse(squared_error_sums, counts) -> float:
    """RMSE of all ratings from per-node (Σ(r − r̂)², n): √(Σ sums / Σ n)."""
    return float(np.sqrt(np.sum(squared_error_sums) / np.sum(counts)))


def check_pooled_rmse(squared_error_sums, counts, answer) -> Feedback:
    """Exercise 11.2: the server's RMSE over every node's ratings from the nodes' (Σ(r − r̂)², n)."""
    sums, n = np.asarray(squared_error_sums, float), np.asarray(counts, float)
    return _diagnose(answer, pooled_rmse(sums, n), [
        (float(np.mean(np.sqrt(sums / n))), "that is the mean of the nodes' RMSEs: a node with more ratings must weigh more."),
        (float(np.sqrt(np.mean(sums / n))), "that averages the nodes' mean squared errors equally; pool the sums and the counts."),
        (float(np.sum(sums) / np.sum(n)), "that is the mean squared error: take its square root."),
    ], rel=1e-4, correct="pool the sums and the counts, then take the root: √(Σ sums / Σ n).")
