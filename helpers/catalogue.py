"""Which datasets each lesson needs: read by the loaders, the start-here check and the tests.

A plain table, importing nothing of the course: the data layer asks it which lessons an archive
serves, without reaching up to the lessons' presets (:mod:`helpers.lessons`).
"""

from __future__ import annotations

# Which archives each lesson needs (keys of helpers.download.REGISTRY).
LESSON_DATA = {
    "00_start_here.ipynb": [],
    "01_softmax_scoring.ipynb": ["ml-latest-small"],
    "02_gradient_descent.ipynb": ["ml-latest-small"],
    "03_federated_rounds.ipynb": ["ml-latest-small"],
    "04_federated_softmax_ranking.ipynb": ["ml-latest-small"],
    "05_transfer_cifar10.ipynb": ["cifar-10"],
    "06_movie_to_music_transfer.ipynb": ["douban-book", "douban-music", "ml-latest-small", "lastfm-2k"],
    "07_federated_transfer.ipynb": ["cifar-10"],
    "08_federated_cold_start.ipynb": ["douban-book", "douban-music", "ml-latest-small", "lastfm-2k"],
    "09_federating_costs.ipynb": ["cifar-10", "ml-latest-small"],
    "10_privacy_security.ipynb": ["ml-latest-small"],
    "11_federated_on_flower.ipynb": ["ml-latest-small"],
}


# Archives no lesson needs: dataset → (lesson numbers that prefer it, what happens without it).
OPTIONAL_DATA = {
    "douban-movie": (("06", "08"), "lessons 06 and 08 use Douban book as the source instead"),
    "ml-100k": ((), "only the benchmarks' --variant 100k use it"),
}


def lessons_using(dataset: str) -> list[str]:
    """Lesson numbers ("01", "06", …) whose notebooks need or prefer ``dataset``."""
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
