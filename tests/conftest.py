"""Shared test set-up for nbval: skip notebooks whose real data cannot be reached, and
never compare stderr (TensorFlow's C++ start-up logs land there, with timestamps)."""

from __future__ import annotations

import pytest

from helpers.download import MIRROR_ENV, is_available
from helpers.lessons import LESSON_DATA, datasets_for

NOTEBOOK_DATA = LESSON_DATA  # which archives each lesson needs


def pytest_collection_modifyitems(config, items):
    verdicts: dict[str, str | None] = {}
    for item in items:
        name = item.path.name
        if not name.endswith(".ipynb"):
            continue
        if "stderr" not in item.parent.skip_compare:
            item.parent.skip_compare += ("stderr",)
        if name not in verdicts:
            missing = [d for d in datasets_for(name) if not is_available(d)]
            verdicts[name] = (
                f"real data not reachable ({', '.join(missing)}): connect to the internet or set "
                f"{MIRROR_ENV} (for example {MIRROR_ENV}=../shared/datasets)"
                if missing else None
            )
        if verdicts[name]:
            item.add_marker(pytest.mark.skip(reason=verdicts[name]))
