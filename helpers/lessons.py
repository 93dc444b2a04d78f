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
}


# Archives a lesson prefers but can do without: dataset → (lesson number, what it does instead).
OPTIONAL_DATA = {"douban-movie": ("05", "lesson 05 uses Douban book as the source instead")}


def lessons_using(dataset: str) -> list[str]:
    """Lesson numbers ("01", "05", …) whose notebooks need or prefer ``dataset``."""
    needed = [name[:2] for name, archives in LESSON_DATA.items() if dataset in archives]
    optional = [OPTIONAL_DATA[dataset][0]] if dataset in OPTIONAL_DATA else []
    return sorted(set(needed + optional))


def datasets_for(notebook: str) -> list[str]:
    """Archives a notebook needs: a lesson's own list, and the same for its solutions notebook
    (``NN_topic_solutions.ipynb``). Unknown notebooks need none."""
    return LESSON_DATA.get(notebook.replace("_solutions.ipynb", ".ipynb"), [])
