"""Biased matrix factorisation trained by gradient descent written by hand (lesson 02).

Model, for user u and item i:

    r̂_ui = μ + b_u + b_i + p_u · q_i

Loss on a batch B (mean squared error plus an L2 penalty on the rows it touches):

    L_B(θ) = (1/|B|) Σ_(u,i)∈B [ (r_ui − r̂_ui)² + λ (‖p_u‖² + ‖q_i‖² + b_u² + b_i²) ]

Update, by hand: for every variable v,  v ← v − η ∂L_B/∂v  (``assign_sub``).
Gradients of embedding rows arrive as ``tf.IndexedSlices`` (only touched rows), and
are applied with ``scatter_sub``: the same arithmetic, without a dense copy.

The global mean μ is fixed at the training mean (it is not a variable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from helpers.tf_quiet import tf  # first: TensorFlow without its start-up lines
import numpy as np
import pandas as pd

from helpers.metrics import chosen_round, unit_sums


@dataclass
class MFParams:
    """Trainable parameters θ of biased MF, plus the fixed global mean.

    Attributes:
        mu: global mean rating μ (stars), a constant.
        user_bias: (U,) b_u.  item_bias: (I,) b_i.
        user_vec: (U, d) p_u.  item_vec: (I, d) q_i.
    """

    mu: float
    user_bias: tf.Variable
    item_bias: tf.Variable
    user_vec: tf.Variable
    item_vec: tf.Variable

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.user_bias, self.item_bias, self.user_vec, self.item_vec]

    def numpy(self) -> list[np.ndarray]:
        """Copies of the variables' values, in :attr:`variables` order."""
        return [v.numpy().copy() for v in self.variables]

    def copy(self) -> "MFParams":
        """An independent copy (new variables with the same values)."""
        return MFParams(self.mu, *(tf.Variable(v) for v in self.numpy()))


def init_mf(n_users: int, n_items: int, dim: int, mu: float, seed: int = 0, scale: float = 0.1) -> MFParams:
    """Biases at zero, vectors ~ N(0, scale²), seeded."""
    rng = np.random.default_rng(seed)
    return MFParams(
        mu=float(mu),
        user_bias=tf.Variable(np.zeros(n_users, np.float32)),
        item_bias=tf.Variable(np.zeros(n_items, np.float32)),
        user_vec=tf.Variable(rng.normal(0, scale, (n_users, dim)).astype(np.float32)),
        item_vec=tf.Variable(rng.normal(0, scale, (n_items, dim)).astype(np.float32)),
    )


def predict(params: MFParams, users, items) -> tf.Tensor:
    """r̂ for index tensors ``users``, ``items`` of shape (B,): (B,) float32 stars."""
    p = tf.gather(params.user_vec, users)
    q = tf.gather(params.item_vec, items)
    return (params.mu + tf.gather(params.user_bias, users) + tf.gather(params.item_bias, items)
            + tf.reduce_sum(p * q, axis=1))


def batch_loss(params: MFParams, users, items, ratings, l2: float, reduce: str = "mean") -> tf.Tensor:
    """L_B(θ): squared error + L2 on touched rows, averaged (``"mean"``) or summed (``"sum"``)."""
    error = ratings - predict(params, users, items)
    penalty = (tf.reduce_sum(tf.gather(params.user_vec, users) ** 2, axis=1)
               + tf.reduce_sum(tf.gather(params.item_vec, items) ** 2, axis=1)
               + tf.gather(params.user_bias, users) ** 2 + tf.gather(params.item_bias, items) ** 2)
    per_example = error**2 + l2 * penalty
    return tf.reduce_sum(per_example) if reduce == "sum" else tf.reduce_mean(per_example)


def apply_gradient(variable: tf.Variable, gradient, learning_rate) -> None:
    """v ← v − η g, by hand. Sparse gradients (IndexedSlices) update only their rows."""
    if isinstance(gradient, tf.IndexedSlices):
        variable.scatter_sub(tf.IndexedSlices(learning_rate * gradient.values, gradient.indices))
    else:
        variable.assign_sub(learning_rate * gradient)


def hand_step(params: MFParams, users, items, ratings, learning_rate, l2: float, reduce: str = "mean"):
    """One gradient-descent step on one batch, no optimizer object. Returns the batch loss."""
    with tf.GradientTape() as tape:
        loss = batch_loss(params, users, items, ratings, l2, reduce)
    for variable, gradient in zip(params.variables, tape.gradient(loss, params.variables)):
        apply_gradient(variable, gradient, learning_rate)
    return loss


def optimizer_step(params: MFParams, optimizer, users, items, ratings, l2: float):
    """The same step through a Keras optimizer (for the equivalence check and Adam/momentum)."""
    with tf.GradientTape() as tape:
        loss = batch_loss(params, users, items, ratings, l2)
    optimizer.apply_gradients(zip(tape.gradient(loss, params.variables), params.variables))
    return loss


def as_tensors(frame: pd.DataFrame) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(users, items, ratings) tensors of a ratings frame: int32, int32, float32."""
    return (tf.constant(frame["user_idx"].to_numpy(np.int32)), tf.constant(frame["item_idx"].to_numpy(np.int32)),
            tf.constant(frame["rating"].to_numpy(np.float32)))


def rmse_on(params: MFParams, frame_tensors) -> float:
    """RMSE (stars) of the model on (users, items, ratings) tensors."""
    users, items, ratings = frame_tensors
    return float(tf.sqrt(tf.reduce_mean((ratings - predict(params, users, items)) ** 2)))


def make_epoch(params: MFParams, l2: float, optimizer=None):
    """A compiled function that runs one pass of mini-batch updates over given data.

    The returned ``epoch(users, items, ratings, batch_size, learning_rate)`` walks the
    (already shuffled) arrays in consecutive batches of ``batch_size`` (the last one may
    be smaller) and updates ``params`` in place, by hand (``optimizer=None``) or with
    the Keras ``optimizer``. It returns the mean batch loss. The loop over batches
    runs inside TensorFlow, so even batch size 1 costs microseconds per update.
    """

    if optimizer is not None:
        optimizer.build(params.variables)  # create its slots outside the compiled loop

    @tf.function(reduce_retracing=True)
    def epoch(users, items, ratings, batch_size, learning_rate):
        n = tf.shape(users)[0]
        n_batches = (n + batch_size - 1) // batch_size
        total = tf.constant(0.0)
        for b in tf.range(n_batches):
            start = b * batch_size
            stop = tf.minimum(start + batch_size, n)
            batch = (users[start:stop], items[start:stop], ratings[start:stop])
            if optimizer is None:
                total += hand_step(params, *batch, learning_rate, l2)
            else:
                total += optimizer_step(params, optimizer, *batch, l2)
        return total / tf.cast(n_batches, tf.float32)

    return epoch


@dataclass
class History:
    """Per-epoch record of a training run.

    Attributes:
        train_rmse, test_rmse: RMSE in stars after each epoch (index 0 = before training).
        valid_rmse: the same on the validation ratings, when :func:`train_mf` was given them (else empty).
        test_units: with ``user_units=True``, each test user's (Σ squared error in stars², test ratings)
            after each epoch, (U, 2) per epoch (:func:`user_error_sums`), for the bootstrap over test
            users; else empty.
        seconds: cumulative wall-clock seconds of training after each epoch (0 first).
        updates: cumulative number of parameter updates after each epoch.
        diverged: True if the loss became non-finite or exploded; training stopped.
    """

    train_rmse: list[float] = field(default_factory=list)
    test_rmse: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    updates: list[int] = field(default_factory=list)
    diverged: bool = False
    valid_rmse: list[float] = field(default_factory=list)
    test_units: list[np.ndarray] = field(default_factory=list)


def user_error_sums(params: MFParams, frame_tensors) -> np.ndarray:
    """Each user's (Σ (r − r̂)² in stars², ratings) on (users, items, ratings) tensors, for the users
    present, in user order: (U', 2) float64 (:func:`helpers.metrics.unit_sums`); the RMSE is the root
    of Σ column 0 / Σ column 1."""
    users, items, ratings = frame_tensors
    squared = (ratings - predict(params, users, items)).numpy().astype(np.float64) ** 2
    return unit_sums(users.numpy(), squared, int(params.user_vec.shape[0]))


def train_mf(
    params: MFParams,
    train: pd.DataFrame,
    test: pd.DataFrame,
    *,
    batch_size: int,
    epochs: int,
    learning_rate: float,
    l2: float = 0.0,
    optimizer=None,
    seed: int = 0,
    valid: pd.DataFrame | None = None,
    user_units: bool = False,
) -> History:
    """Train ``params`` in place for ``epochs`` passes with batches of ``batch_size``.

    ``batch_size = len(train)`` is full-batch gradient descent, 1 is stochastic
    gradient descent, anything between is mini-batch. Data is reshuffled every
    epoch with a seeded generator. With ``optimizer`` (a Keras optimizer) the step
    uses it instead of the hand-written update (``learning_rate`` is then the
    optimizer's own). With ``valid`` (ratings held out of ``train``) the RMSE on it is
    recorded after every epoch too, to choose the epoch on (``History.valid_rmse``). With
    ``user_units`` each test user's summed squared error is recorded after every epoch as well
    (``History.test_units``), so that the epoch chosen on validation can be judged over test users.

    Raises:
        ValueError: learning rate ≤ 0, batch size < 1 or larger than the data, epochs < 1.
    """
    check_schedule(learning_rate, batch_size, len(train), epochs)
    rng = np.random.default_rng(seed)
    train_t, test_t = as_tensors(train), as_tensors(test)
    epoch = make_epoch(params, l2, optimizer)
    valid_t = None if valid is None else as_tensors(valid)
    history = History([rmse_on(params, train_t)], [rmse_on(params, test_t)], [0.0], [0])
    if valid_t is not None:
        history.valid_rmse.append(rmse_on(params, valid_t))
    if user_units:
        history.test_units.append(user_error_sums(params, test_t))
    per_epoch = -(-len(train) // batch_size)
    for _ in range(epochs):
        order = tf.constant(rng.permutation(len(train)).astype(np.int32))
        shuffled = [tf.gather(t, order) for t in train_t]
        start = time.perf_counter()
        loss = float(epoch(*shuffled, tf.constant(batch_size), tf.constant(learning_rate, tf.float32)))
        history.seconds.append(history.seconds[-1] + time.perf_counter() - start)
        history.updates.append(history.updates[-1] + per_epoch)
        train_rmse = rmse_on(params, train_t)
        if not np.isfinite(loss) or not np.isfinite(train_rmse) or train_rmse > 1e3:
            history.diverged = True
            history.train_rmse.append(float("nan"))
            history.test_rmse.append(float("nan"))
            if valid_t is not None:
                history.valid_rmse.append(float("nan"))
            if user_units:
                history.test_units.append(np.column_stack([np.full(len(history.test_units[-1]), np.nan),
                                                           history.test_units[-1][:, 1]]))
            break
        history.train_rmse.append(train_rmse)
        history.test_rmse.append(rmse_on(params, test_t))
        if valid_t is not None:
            history.valid_rmse.append(rmse_on(params, valid_t))
        if user_units:
            history.test_units.append(user_error_sums(params, test_t))
    return history


@dataclass
class RateChoice:
    """What :func:`choose_rate` returns.

    Attributes:
        rate: the learning rate chosen on the validation ratings.
        histories: rate → :class:`History` of its run, in the order the rates were given.
        lowest: rate → the run's lowest validation RMSE in stars, at any epoch (inf for a run that
            diverged: a rate that diverges is never chosen, however good its early epochs were).
    """

    rate: float
    histories: dict
    lowest: dict

    @property
    def history(self) -> History:
        """The chosen rate's run."""
        return self.histories[self.rate]


def choose_rate(start: Callable[[], MFParams], train: pd.DataFrame, test: pd.DataFrame, valid: pd.DataFrame, *,
                rates, batch_size: int, epochs: int, l2: float = 0.0, seed: int = 0) -> RateChoice:
    """Train from the same start once per learning rate in ``rates`` (a grid fixed before the runs)
    and keep the rate whose run reaches the lowest validation RMSE at any epoch (:func:`chosen_round`;
    the first given on ties). The test ratings are recorded by :func:`train_mf` but never read here.

    Args:
        start: builds the starting parameters (called once per rate, so every run starts the same).
        rates: the learning rates to try.  batch_size, epochs, l2, seed: as :func:`train_mf`.

    Raises:
        ValueError: no rates, an impossible setting (:func:`check_schedule`), or every run diverged.
    """
    rates = [float(r) for r in rates]
    if not rates:
        raise ValueError("give at least one learning rate to choose from")
    histories, lowest = {}, {}
    for rate in rates:
        histories[rate] = history = train_mf(start(), train, test, valid=valid, batch_size=batch_size, epochs=epochs,
                                             learning_rate=rate, l2=l2, seed=seed)
        lowest[rate] = float("inf") if history.diverged else float(history.valid_rmse[chosen_round(history)])
    best = min(rates, key=lambda r: lowest[r])
    if not np.isfinite(lowest[best]):
        raise ValueError(f"every rate in {rates} diverged at batch size {batch_size}: try smaller rates")
    return RateChoice(best, histories, lowest)


def check_schedule(learning_rate: float, batch_size: int, n: int, steps: int) -> None:
    """Raise ValueError with a plain message for impossible training settings."""
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate must be > 0, got {learning_rate}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch size must be a whole number ≥ 1, got {batch_size}")
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} is larger than the {n:,} training ratings")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"number of steps/epochs must be ≥ 1, got {steps}")


def max_abs_difference(a: MFParams, b: MFParams) -> float:
    """Largest absolute difference between corresponding parameters of two models."""
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a.numpy(), b.numpy()))


class GDPlayground:
    """Fast re-runs of hand-written GD on a fixed data sample, for the lesson's sliders.

    The variables and the compiled update are created once; every :meth:`run`
    resets the parameters to the same seeded start, so a redraw costs only the
    training itself.

    Args:
        train, test: ratings frames (a fixed subsample keeps redraws around a second).
        dim: embedding size d.  l2: penalty λ.  seed: initialisation and batch order.
    """

    def __init__(self, train: pd.DataFrame, test: pd.DataFrame, n_users: int, n_items: int,
                 dim: int = 16, l2: float = 0.02, seed: int = 0):
        self.n = len(train)
        self.params = init_mf(n_users, n_items, dim, float(train["rating"].mean()), seed=seed)
        self.start = self.params.numpy()
        order = np.random.default_rng(seed).permutation(self.n).astype(np.int32)
        self.train_t = [tf.gather(t, order) for t in as_tensors(train)]
        self.test_t = as_tensors(test)
        self.epoch = make_epoch(self.params, l2)

    def run(self, learning_rate: float, batch_size: int, steps: int, points: int = 40) -> dict:
        """Take ``steps`` updates with batches of ``batch_size`` at rate ``learning_rate``.

        Batches are consecutive slices of one fixed shuffle, wrapping around.

        Returns:
            ``steps`` (checkpoint step numbers, starting at 0), ``train_rmse`` and
            ``test_rmse`` at those steps (stars; NaN after divergence), ``diverged``.

        Raises:
            ValueError: rate ≤ 0, batch size < 1 or > the sample, steps < 1.
        """
        check_schedule(learning_rate, batch_size, self.n, steps)
        for variable, value in zip(self.params.variables, self.start):
            variable.assign(value)
        marks = np.unique(np.linspace(0, steps, min(points, steps) + 1).astype(int))
        result = {"steps": marks.tolist(), "train_rmse": [rmse_on(self.params, self.train_t)],
                  "test_rmse": [rmse_on(self.params, self.test_t)], "diverged": False}
        rate = tf.constant(learning_rate, tf.float32)
        for first, last in zip(marks[:-1], marks[1:]):
            index = (np.arange(first * batch_size, last * batch_size) % self.n).astype(np.int32)
            chunk = [tf.gather(t, index) for t in self.train_t]
            self.epoch(*chunk, tf.constant(batch_size), rate)
            train_rmse = rmse_on(self.params, self.train_t)
            if result["diverged"] or not np.isfinite(train_rmse) or train_rmse > 1e3:
                result["diverged"] = True
                train_rmse = test_rmse = float("nan")
            else:
                test_rmse = rmse_on(self.params, self.test_t)
            result["train_rmse"].append(train_rmse)
            result["test_rmse"].append(test_rmse)
        return result
