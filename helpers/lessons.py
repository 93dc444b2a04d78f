"""The lessons' presets: the settings, schedules and set-ups each lesson (and the benchmarks) shares.

Which datasets each lesson needs is :mod:`helpers.catalogue`."""

from __future__ import annotations

# ---------------------------------------------------------------- shared set-ups of the federated lessons

EMBEDDING_DIM = 32  # d of the biased MF in lessons 02, 03, 09, 10 and the benchmarks

# Lesson 03's FedAvg over MovieLens users, reused by lessons 09 and 10, the widgets and the benchmarks.
MF_FEDAVG = dict(clients_per_round=50, local_epochs=1, batch_size=16, client_lr=0.05, server_lr=10.0, l2=0.02)
MF_FEDSGD_RATE = 10.0  # η of FedSGD next to it

# Lessons 07 and 09's FedAvg over CIFAR-10 clients: N clients, K per round, E local epochs, η_c.
CIFAR_FEDERATION = dict(n_clients=20, clients_per_round=10, local_epochs=2, client_lr=0.05)
# Fast mode (COURSE_FAST=1): 5 clients per round and one local epoch, a quarter of the work per round.
CIFAR_FEDERATION_FAST = {**CIFAR_FEDERATION, "clients_per_round": 5, "local_epochs": 1}


def cifar_federation() -> dict:
    """Lessons 07 and 09's CNN federation settings: :data:`CIFAR_FEDERATION`, or :data:`CIFAR_FEDERATION_FAST` in fast mode."""
    from helpers.config import pick

    return dict(pick(CIFAR_FEDERATION, CIFAR_FEDERATION_FAST))


def mf_config(**changes):
    """Lesson 03's :class:`helpers.fedcore.FedConfig` (:data:`MF_FEDAVG`), with ``changes``."""
    from helpers.fedcore import FedConfig

    return FedConfig(**{**MF_FEDAVG, **changes})


# The federated cross-domain cold start (helpers.fedcrossdomain), chosen on validation data of the
# book → music run at β = 50 %, seed 0 (the grid and what it gave: the closing note of the session
# that chose them): both domains' MF as lesson 03's FedAvg with K = 100 and η_s = 20 (lowest
# validation RMSE of the grid K ∈ {50, 100}, E ∈ {1, 2}, η_s ∈ {10, 20}, λ ∈ {0.02, 0.05}), up to
# 500 rounds, the round kept by each domain's validation ratings; each mapping (linear, MLP) by
# FedAdam (every fitting warm client, one full-batch step of η_c = 1 each), up to 200 rounds, its
# server rate (0.01, 0.03, 0.1, 0.3 or 1) and round kept by held-out warm clients in every run;
# on-device fine-tuning 10 steps of 0.05 (lowest validation RMSE of steps {5, 10, 20, 50} × rates
# {0.02, 0.05, 0.1, 0.3} on held-out warm clients treated as cold).
FED_COLD_START = dict(dim=16, domain=dict(clients_per_round=100, local_epochs=1, batch_size=16, client_lr=0.05,
                                          server_lr=20.0, l2=0.02),
                      domain_rounds=500, mapping=dict(local_epochs=1, batch_size=0, client_lr=1.0, server_lr=0.1),
                      mapping_rounds=200, mapping_server="adam",
                      mapping_server_rates=(0.01, 0.03, 0.1, 0.3, 1.0), revealed=(1, 3, 5), tune_steps=10, tune_lr=0.05)


def fed_cold_start_settings(**changes):
    """:data:`FED_COLD_START` as a :class:`helpers.fedcrossdomain.ColdStartSettings`, with ``changes``."""
    from helpers.fedcore import FedConfig
    from helpers.fedcrossdomain import ColdStartSettings

    values = {**FED_COLD_START, **changes}
    return ColdStartSettings(**{**values, "domain": FedConfig(**values["domain"]),
                                "mapping": FedConfig(**values["mapping"])})


def movielens_federation(variant: str = "latest-small", validation: bool = False):
    """The MovieLens federation of lessons 03, 09 and 10: every user a client, each user's own
    ratings split 80/20 (seed 0), μ the training mean. Returns (ratings data, Federation).

    With ``validation`` each client's held-out 20% is split again (seed 1): half (rounded up)
    becomes validation ratings, on which rounds and rates are chosen, the rest the test ratings,
    looked at once. Training data, and so every trained model, are the same either way.
    """
    from helpers.data import load_movielens
    from helpers.federated import Federation
    from helpers.splits import per_user_split

    data = load_movielens(variant)
    train, test = per_user_split(data.ratings, test_fraction=0.2, seed=0)
    valid = None
    if validation:
        valid, test = per_user_split(test, test_fraction=0.5, seed=1)
    return data, Federation(train, test, data.n_users, data.n_items, mu=float(train["rating"].mean()), valid=valid)


def mf_drift_remedies() -> dict:
    """Lesson 09's comparison on MovieLens, in lesson 03's drift setting (E = 10 local epochs):
    name → (FedConfig, Algorithm) for FedAvg, FedProx (μ = 0.1) and FedAdam (η_s = 0.01, τ = 10⁻³).

    μ and η_s were chosen on the validation ratings of ``movielens_federation(validation=True)``
    (never on the test ratings): a sweep over μ ∈ {0.01, 0.1, 1} and η_s ∈ {0.01, 0.03, 0.1},
    100 rounds, lowest validation RMSE after the last round. Measured: FedProx 0.8866 / 0.8768 /
    0.8964, FedAdam 0.8775 / 0.8960 / 0.9240.
    """
    from helpers import fedcore as fc

    return {"FedAvg": (mf_config(local_epochs=10), fc.FEDAVG),
            "FedProx": (mf_config(local_epochs=10, prox_mu=0.1), fc.FEDAVG),
            "FedAdam": (mf_config(local_epochs=10, server_lr=0.01), fc.Algorithm(server_optimizer=fc.server_adam()))}


# Lesson 09's remedies on the CIFAR-10 clients: the variants tried, fixed before any was run; the
# lesson keeps, per remedy, the one with the highest accuracy on the clients' validation images.
CNN_PROX_MUS = (0.1, 1.0)             # FedProx's μ
CNN_ADAM_SERVER_RATES = (0.001, 0.003)  # FedAdam's η_s (τ = 10⁻³)


def cnn_drift_remedies() -> tuple[dict, dict]:
    """Lesson 09's remedies for :class:`helpers.federated_vision.FLTLExperiment`: (method name →
    (settings that differ from FedAvg's, Algorithm) for every variant of :data:`CNN_PROX_MUS` and
    :data:`CNN_ADAM_SERVER_RATES`, remedy → the names of its variants), the second for
    :meth:`~helpers.federated_vision.FLTLExperiment.choose_methods`. FedAdam averages the
    batch-norm statistics as they are and moves only the weights."""
    from helpers import fedcore as fc

    prox = {f"FedProx, μ = {mu:g}": ({"prox_mu": mu}, fc.FEDAVG) for mu in CNN_PROX_MUS}
    adam = {f"FedAdam, η_s = {rate:g}": ({"server_lr": rate}, fc.Algorithm(server_optimizer=fc.server_adam()))
            for rate in CNN_ADAM_SERVER_RATES}
    return {**prox, **adam}, {"FedProx": list(prox), "FedAdam": list(adam)}


# ---------------------------------------------------------------- the CIFAR-10 source of lessons 05 and 07

# Full mode: every source image (25,000 on the complete build), 12 epochs — trained once, then cached.
# Fast mode (COURSE_FAST=1): 1,000 images per source class and 4 epochs, a weaker but real source.
# Both hold a seeded share of each class out as validation images, on which the source's curve is drawn.
# The shuffled-label source of lesson 05's negative-transfer section gets the same images and epochs,
# so that the two sources differ only in what their labels teach.
SOURCE_EPOCHS = {"full": 12, "fast": 4}
SOURCE_IMAGES_PER_CLASS = {"full": None, "fast": 1_000}
SOURCE_VALIDATION_PER_CLASS = {"full": 500, "fast": 100}


def cifar_source(data, shuffled: bool = False, progress: bool = True):
    """The pre-trained source extractor that lessons 05 and 07 share (see
    :mod:`helpers.source_model`): from the cache, or trained now (a bar over epochs).

    The source task keeps :data:`SOURCE_IMAGES_PER_CLASS` of each class, of which
    :data:`SOURCE_VALIDATION_PER_CLASS` are held out as validation images (seed 0); it trains
    for :data:`SOURCE_EPOCHS` epochs (a fixed cosine schedule), its curve drawn on the validation images.

    Args:
        data: :class:`helpers.data.ImageData` as loaded (its ``build`` keys the cache).
        shuffled: the same training images with their labels shuffled (a source that teaches
            nothing true), the same epochs; validation and test labels stay true.

    Returns:
        (the source :class:`helpers.vision_transfer.Task` it was trained on, the
        :class:`helpers.source_model.Source`).
    """
    from helpers import source_model as sm
    from helpers import vision_transfer as vt
    from helpers.config import fast_mode

    mode = "fast" if fast_mode() else "full"
    source = vt.smaller(vt.source_and_target(data)[0], SOURCE_IMAGES_PER_CLASS[mode], None)
    source = vt.hold_out(source, SOURCE_VALIDATION_PER_CLASS[mode], seed=0)
    if shuffled:
        source = vt.shuffled_labels(source)
    return source, sm.pretrained_source(source, data.build, sm.SourceRecipe(epochs=SOURCE_EPOCHS[mode]), progress)


# Lesson 05's target task: every target image in full mode; in fast mode 200 test images per class
# (each of the lesson's many target runs ends with a pass over its test set). A seeded share of each
# class's training images is held out as validation images, on which the lesson chooses its methods.
TARGET_TEST_PER_CLASS = {"full": None, "fast": 200}
TARGET_VALIDATION_PER_CLASS = {"full": 300, "fast": 100}


def cifar_target(data):
    """Lesson 05's target task (dog, frog, horse, ship, truck): the training images less
    :data:`TARGET_VALIDATION_PER_CLASS` of each class held out as validation images
    (:func:`helpers.vision_transfer.hold_out`, seed 0), and the test images of
    :data:`TARGET_TEST_PER_CLASS` (all in full mode, a seeded draw in fast mode)."""
    from helpers import vision_transfer as vt
    from helpers.config import fast_mode

    mode = "fast" if fast_mode() else "full"
    target = vt.smaller(vt.source_and_target(data)[1], None, TARGET_TEST_PER_CLASS[mode])
    return vt.hold_out(target, TARGET_VALIDATION_PER_CLASS[mode], seed=0)


# Lessons 07 and 09's federated target task: few images per client, as on phones; also keeps a round short.
# 2,000 training images over 20 clients, each holding a fifth of its own out as validation images; 1,000 test images.
FEDERATED_TARGET_PER_CLASS = {"train": 400, "test": 200}


def federated_target(data):
    """Lessons 07 and 09's target task: lesson 05's target classes, :data:`FEDERATED_TARGET_PER_CLASS`
    images of each (seeded draws), to be split over :data:`CIFAR_FEDERATION`'s clients."""
    from helpers import vision_transfer as vt

    target = vt.source_and_target(data)[1]
    return vt.smaller(target, FEDERATED_TARGET_PER_CLASS["train"], FEDERATED_TARGET_PER_CLASS["test"])


# ---------------------------------------------------------------- lesson 04: the softmax recommender, federated

# Every setting below was chosen on the validation items (each user's second-to-last interaction),
# never on the test items, by `python -m helpers.bench fedsoftmax --sweep` (seed 0, the round chosen by
# the best mean validation HR@10 over 5 rounds; the sweep's grid is in helpers.bench.SOFTMAX_SWEEP).
SOFTMAX_DIM = 32
SOFTMAX_NEGATIVES = 100  # m, sampled negatives per client and round
# FedAvg: K = 50 of 610 users per round, E = 5 local full-batch steps (B = ∞), η_c = 1, η_s = 10, λ = 0.05 on p_u
SOFTMAX_FEDAVG = dict(clients_per_round=50, local_epochs=5, batch_size=0, client_lr=1.0, server_lr=10.0, l2=0.05)
# FedSGD: one full-batch gradient per client, θ ← θ − η Σ (n_k/n) ∇L_k with η = η_c · η_s = 2 · 20
SOFTMAX_FEDSGD = dict(clients_per_round=50, learning_rate=40.0, client_lr=2.0, l2=0.05)
# DP-FedAvg: FedAvg's client training with η_s = 1 (η_s = 10 let the noise swamp the table on validation)
SOFTMAX_DP_SERVER_LR = 1.0
# Centralised reference: Adam on the pooled data, 8 users a batch, λ = 0.2
SOFTMAX_CENTRAL = dict(epochs=40, learning_rate=0.003, batch_users=8, l2=0.2)


def softmax_rounds() -> int:
    """Rounds of lesson 04's federated runs (the round then chosen on validation): 400, 150 in fast mode."""
    from helpers.config import pick

    return pick(400, 150)


def softmax_seeds() -> tuple:
    """Seeds of lesson 04's comparisons: three, one in fast mode (whose findings then claim no winner)."""
    from helpers.config import pick

    return pick((0, 1, 2), (0,))


def softmax_fedavg(**changes):
    """Lesson 04's FedAvg :class:`helpers.fedcore.FedConfig` (:data:`SOFTMAX_FEDAVG`), with ``changes``."""
    from helpers.fedcore import FedConfig

    return FedConfig(**{**SOFTMAX_FEDAVG, **changes})


def softmax_fedsgd(seed: int = 0):
    """Lesson 04's FedSGD :class:`helpers.fedcore.FedConfig` (:data:`SOFTMAX_FEDSGD`)."""
    from helpers.fedcore import FedConfig

    return FedConfig.fedsgd(seed=seed, **SOFTMAX_FEDSGD)


def movielens_ranking(variant: str = "latest-small"):
    """Lesson 04's data: MovieLens with every user a client, split by time on the device (test: the
    last interaction, validation: the one before). Returns (ratings data, RankingSplit, Evaluator)."""
    from helpers import fedsoftmax as fs
    from helpers.data import load_movielens

    data = load_movielens(variant)
    split = fs.ranking_split(data.ratings, data.n_users, data.n_items)
    return data, split, fs.Evaluator(split)


def softmax_methods(split, evaluator, rounds: int | None = None, forms: tuple = ("sampled",)) -> dict:
    """Lesson 04's comparison: name → ``run(seed)`` → :class:`helpers.fedsoftmax.SelectedRun` for the
    centralised reference, FedSGD and FedAvg (one entry per update form in ``forms``), each on the same
    split, seeded by ``seed`` (initial vectors, and the clients and negatives drawn), its round or epoch
    chosen on validation."""
    from helpers import fedsoftmax as fs

    rounds = rounds or softmax_rounds()
    common = dict(negatives=SOFTMAX_NEGATIVES, dim=SOFTMAX_DIM)
    methods = {"centralised": lambda seed: fs.train_centralised(split, evaluator, SOFTMAX_DIM, seed=seed, **SOFTMAX_CENTRAL),
               "FedSGD": lambda seed: fs.run_federated(split, evaluator, softmax_fedsgd(seed), rounds, "sampled",
                                                       init_seed=seed, **common)}
    for form in forms:
        methods[f"FedAvg ({form})" if len(forms) > 1 else "FedAvg"] = (
            lambda seed, form=form: fs.run_federated(split, evaluator, softmax_fedavg(seed=seed), rounds, form,
                                                     init_seed=seed, **common))
    return methods


# Lesson 08's federated interaction model, MovieLens → Last.fm (helpers.fedinteraction), chosen on the
# validation ratings of both domains' clients, seed 0 (E = 1, B = 32, η_c = 0.05, λ = 0.02 throughout):
# plain server SGD diverged on Last.fm at η_s = 20 and 50 (K = 100) and gained little at η_s = 10
# (K = 50); a per-row mean with η_s = 1 never left the start; FedAdam with τ = 1e-3 moved the item rows
# too little. FedAdam with τ = 1e-6, K = 100: η_s = 0.01 beat 0.003 on Last.fm and 0.03 on MovieLens.
# The most rounds: 100 on MovieLens, 60 on Last.fm (their best validation rounds were 77 and 43 of 100).
FED_INTERACTION = dict(dim=16, config=dict(clients_per_round=100, local_epochs=1, batch_size=32, client_lr=0.05,
                                           server_lr=0.01, l2=0.02),
                       source_rounds=100, target_rounds=60, adam_tau=1e-6)


def fed_interaction_settings(**changes):
    """:data:`FED_INTERACTION` as a :class:`helpers.fedinteraction.InteractionSettings`, with ``changes``."""
    from helpers.fedcore import FedConfig
    from helpers.fedinteraction import InteractionSettings

    values = {**FED_INTERACTION, **changes}
    return InteractionSettings(**{**values, "config": FedConfig(**values["config"])})
