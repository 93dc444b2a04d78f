"""Shared test set-up for nbval: skip notebooks whose real data cannot be reached, and
never compare stderr (TensorFlow's C++ start-up logs land there, with timestamps)."""

from __future__ import annotations

import pytest

from helpers.download import MIRROR_ENV, is_available

# Which archives each lesson needs (keys of helpers.download.REGISTRY).
NOTEBOOK_DATA = {
    "01_softmax_scoring.ipynb": ["ml-latest-small"],
    "02_gradient_descent.ipynb": ["ml-latest-small"],
    "03_federated_rounds.ipynb": ["ml-latest-small"],
    "04_transfer_cifar10.ipynb": ["cifar-10"],
    "05_movie_to_music_transfer.ipynb": ["douban-book", "douban-music", "ml-latest-small", "lastfm-2k"],
    "06_federated_transfer.ipynb": ["cifar-10", "ml-latest-small"],
    "07_privacy_security.ipynb": ["ml-latest-small"],
}


def pytest_collection_modifyitems(config, items):
    verdicts: dict[str, str | None] = {}
    for item in items:
        name = item.path.name
        if not name.endswith(".ipynb"):
            continue
        if "stderr" not in item.parent.skip_compare:
            item.parent.skip_compare += ("stderr",)
        if name not in verdicts:
            missing = [d for d in NOTEBOOK_DATA.get(name, []) if not is_available(d)]
            verdicts[name] = (
                f"real data not reachable ({', '.join(missing)}): connect to the internet or set "
                f"{MIRROR_ENV} (for example {MIRROR_ENV}=../shared/datasets)"
                if missing else None
            )
        if verdicts[name]:
            item.add_marker(pytest.mark.skip(reason=verdicts[name]))
