"""Facts about the lessons shared by tests, the start-here check and the benchmarks."""

from __future__ import annotations

# Which archives each lesson needs (keys of helpers.download.REGISTRY).
LESSON_DATA = {
    "00_start_here.ipynb": [],
    "01_softmax_scoring.ipynb": ["ml-latest-small"],
    "02_gradient_descent.ipynb": ["ml-latest-small"],
    "03_federated_rounds.ipynb": ["ml-latest-small"],
    "04_transfer_cifar10.ipynb": ["cifar-10"],
    "05_movie_to_music_transfer.ipynb": ["douban-book", "douban-music", "ml-latest-small", "lastfm-2k"],
    "06_federated_transfer.ipynb": ["cifar-10", "ml-latest-small"],
    "07_privacy_security.ipynb": ["ml-latest-small"],
    "08_federated_on_flower.ipynb": ["ml-latest-small"],
}


# Archives no lesson needs: dataset → (lesson numbers that prefer it, what happens without it).
OPTIONAL_DATA = {
    "douban-movie": (("05",), "lesson 05 uses Douban book as the source instead"),
    "ml-100k": ((), "only the benchmarks' --variant 100k use it"),
}


def lessons_using(dataset: str) -> list[str]:
    """Lesson numbers ("01", "05", …) whose notebooks need or prefer ``dataset``."""
    needed = [name[:2] for name, archives in LESSON_DATA.items() if dataset in archives]
    return sorted(set(needed + list(OPTIONAL_DATA.get(dataset, ((), ""))[0])))


def is_required(dataset: str) -> bool:
    """Whether some lesson cannot run without archive ``dataset``."""
    return any(dataset in archives for archives in LESSON_DATA.values())


def lessons_missing_data(missing: set[str]) -> dict[str, list[str]]:
    """Lesson number → the archives in ``missing`` it needs, for every lesson that cannot run without them."""
    blocked = {name[:2]: [d for d in archives if d in missing] for name, archives in LESSON_DATA.items()}
    return {lesson: archives for lesson, archives in blocked.items() if archives}


def datasets_for(notebook: str) -> list[str]:
    """Archives a notebook needs: a lesson's own list, and the same for its solutions notebook
    (``NN_topic_solutions.ipynb``). Unknown notebooks need none."""
    return LESSON_DATA.get(notebook.replace("_solutions.ipynb", ".ipynb"), [])


# ---------------------------------------------------------------- shared set-ups of the federated lessons

EMBEDDING_DIM = 32  # d of the biased MF in lessons 02, 03, 06, 07 and the benchmarks

# Lesson 03's FedAvg over MovieLens users, reused by lessons 06 and 07, the widgets and the benchmarks.
MF_FEDAVG = dict(clients_per_round=50, local_epochs=1, batch_size=16, client_lr=0.05, server_lr=10.0, l2=0.02)
MF_FEDSGD_RATE = 10.0  # η of FedSGD next to it

# Lesson 06's FedAvg over CIFAR-10 clients: N clients, K per round, E local epochs, η_c.
CIFAR_FEDERATION = dict(n_clients=20, clients_per_round=10, local_epochs=2, client_lr=0.05)
# Fast mode (COURSE_FAST=1): 5 clients per round and one local epoch, a quarter of the work per round.
CIFAR_FEDERATION_FAST = {**CIFAR_FEDERATION, "clients_per_round": 5, "local_epochs": 1}


def cifar_federation() -> dict:
    """Lesson 06's CNN federation settings: :data:`CIFAR_FEDERATION`, or :data:`CIFAR_FEDERATION_FAST` in fast mode."""
    from helpers.config import pick

    return dict(pick(CIFAR_FEDERATION, CIFAR_FEDERATION_FAST))


def mf_config(**changes):
    """Lesson 03's :class:`helpers.fedcore.FedConfig` (:data:`MF_FEDAVG`), with ``changes``."""
    from helpers.fedcore import FedConfig

    return FedConfig(**{**MF_FEDAVG, **changes})


def movielens_federation(variant: str = "latest-small"):
    """The MovieLens federation of lessons 03, 06 and 07: every user a client, each user's own
    ratings split 80/20 (seed 0), μ the training mean. Returns (ratings data, Federation)."""
    from helpers.data import load_movielens
    from helpers.federated import Federation
    from helpers.splits import per_user_split

    data = load_movielens(variant)
    train, test = per_user_split(data.ratings, test_fraction=0.2, seed=0)
    return data, Federation(train, test, data.n_users, data.n_items, mu=float(train["rating"].mean()))


def mf_drift_remedies() -> dict:
    """Lesson 06's comparison on MovieLens, in lesson 03's drift setting (E = 10 local epochs):
    name → (FedConfig, Algorithm) for FedAvg, FedProx (μ = 0.1) and FedAdam (η_s = 0.01, τ = 10⁻³).

    μ and η_s were chosen by a sweep over μ ∈ {0.01, 0.1, 1} and η_s ∈ {0.01, 0.03, 0.1}
    (100 rounds, the rate at which each kept the test RMSE lowest at the end).
    """
    from helpers import fedcore as fc

    return {"FedAvg": (mf_config(local_epochs=10), fc.FEDAVG),
            "FedProx": (mf_config(local_epochs=10, prox_mu=0.1), fc.FEDAVG),
            "FedAdam": (mf_config(local_epochs=10, server_lr=0.01), fc.Algorithm(server_optimizer=fc.server_adam()))}


def cnn_drift_remedies() -> dict:
    """Lesson 06's comparison on the CIFAR-10 clients: method → (settings that differ from FedAvg's,
    Algorithm), for :class:`helpers.federated_vision.FLTLExperiment`: FedProx (μ = 0.1) and FedAdam
    (η_s = 0.001, τ = 10⁻³; batch-norm statistics averaged as they are).

    Chosen by sweeps at α = 0.1 from the pre-trained start (K = 10, E = 2, 20 rounds, mean test
    accuracy over the last 5 rounds), after the start got its class-mean head round
    (:func:`helpers.federated_vision.class_mean_head`): FedAdam η_s = 0.001 / 0.003 / 0.01 gave
    0.570 / 0.369 / 0.339 and FedProx μ = 0.1 / 1 gave 0.528 / 0.525, against FedAvg's 0.527
    (an earlier sweep from the random-head start had found μ = 0.1 among {0.01, 0.1, 1}).
    """
    from helpers import fedcore as fc

    return {"FedProx": ({"prox_mu": 0.1}, fc.FEDAVG),
            "FedAdam": ({"server_lr": 0.001}, fc.Algorithm(server_optimizer=fc.server_adam()))}


# ---------------------------------------------------------------- the CIFAR-10 source of lessons 04 and 06

# Full mode: every source image (25,000 on the complete build), 12 epochs — trained once, then cached.
# Fast mode (COURSE_FAST=1): 1,000 images per source class and 4 epochs, a weaker but real source.
# The shuffled-label source of lesson 04's negative-transfer section learns nothing true, so it gets
# a few epochs on part of the source images.
SOURCE_EPOCHS = {"full": 12, "fast": 4}
SOURCE_IMAGES_PER_CLASS = {"full": None, "fast": 1_000}
SHUFFLED_SOURCE_EPOCHS = {"full": 3, "fast": 2}
SHUFFLED_SOURCE_IMAGES_PER_CLASS = {"full": 1_000, "fast": 500}


def cifar_source(data, shuffled: bool = False, progress: bool = True):
    """The pre-trained source extractor that lessons 04 and 06 share (see
    :mod:`helpers.source_model`): from the cache, or trained now (a bar over epochs).

    Args:
        data: :class:`helpers.data.ImageData` as loaded (its ``build`` keys the cache).
        shuffled: source images with their labels shuffled (a source that teaches
            nothing true): :data:`SHUFFLED_SOURCE_IMAGES_PER_CLASS` of each class,
            :data:`SHUFFLED_SOURCE_EPOCHS`.

    Returns:
        (the source :class:`helpers.vision_transfer.Task` it was trained on, the
        :class:`helpers.source_model.Source`).
    """
    from helpers import source_model as sm
    from helpers import vision_transfer as vt
    from helpers.config import fast_mode

    mode = "fast" if fast_mode() else "full"
    per_class = (SHUFFLED_SOURCE_IMAGES_PER_CLASS if shuffled else SOURCE_IMAGES_PER_CLASS)[mode]
    source = vt.smaller(vt.source_and_target(data)[0], per_class, None)
    if shuffled:
        source = vt.shuffled_labels(source)
    epochs = (SHUFFLED_SOURCE_EPOCHS if shuffled else SOURCE_EPOCHS)[mode]
    return source, sm.pretrained_source(source, data.build, sm.SourceRecipe(epochs=epochs), progress)


# Lesson 04's target task: every target image in full mode; in fast mode 200 test images per class
# (each of the lesson's many target runs ends with a pass over its test set).
TARGET_TEST_PER_CLASS = {"full": None, "fast": 200}


def cifar_target(data):
    """Lesson 04's target task (dog, frog, horse, ship, truck): every training image, and the test
    images of :data:`TARGET_TEST_PER_CLASS` (all in full mode, a seeded draw in fast mode)."""
    from helpers import vision_transfer as vt
    from helpers.config import fast_mode

    target = vt.source_and_target(data)[1]
    per_class = TARGET_TEST_PER_CLASS["fast" if fast_mode() else "full"]
    return target if per_class is None else vt.smaller(target, None, per_class)


# Lesson 06's federated target task: few images per client, as on phones; also keeps a round short.
FEDERATED_TARGET_PER_CLASS = {"train": 400, "test": 200}  # 2,000 training images over 20 clients, 1,000 test


def federated_target(data):
    """Lesson 06's target task: lesson 04's target classes, :data:`FEDERATED_TARGET_PER_CLASS`
    images of each (seeded draws), to be split over :data:`CIFAR_FEDERATION`'s clients."""
    from helpers import vision_transfer as vt

    target = vt.source_and_target(data)[1]
    return vt.smaller(target, FEDERATED_TARGET_PER_CLASS["train"], FEDERATED_TARGET_PER_CLASS["test"])
