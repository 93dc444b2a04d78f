"""helpers.catalogue: which archives each lesson needs, and what the loaders and start-here check read from it."""

from __future__ import annotations

from helpers import catalogue
from helpers.download import REGISTRY


def test_every_archive_a_lesson_names_is_a_registered_download():
    named = {archive for archives in catalogue.LESSON_DATA.values() for archive in archives}
    assert named <= set(REGISTRY) and set(catalogue.OPTIONAL_DATA) <= set(REGISTRY)
    assert not named & set(catalogue.OPTIONAL_DATA)           # an archive is needed or optional, not both


def test_which_lessons_use_an_archive_counts_those_that_prefer_it():
    assert catalogue.lessons_using("cifar-10") == ["05", "07", "09"]
    assert catalogue.lessons_using("douban-movie") == ["06", "08"]      # optional, preferred by both
    assert catalogue.lessons_using("ml-100k") == []                    # the benchmarks only
    assert catalogue.is_required("lastfm-2k") and not catalogue.is_required("douban-movie")
    assert not catalogue.is_required("no-such-archive")


def test_lessons_missing_data_names_each_blocked_lesson_and_only_its_missing_archives():
    blocked = catalogue.lessons_missing_data({"lastfm-2k", "ml-100k"})
    assert blocked == {"06": ["lastfm-2k"], "08": ["lastfm-2k"]}
    assert catalogue.lessons_missing_data(set()) == {}


def test_a_solutions_notebook_needs_its_lesson_s_archives():
    assert catalogue.datasets_for("05_transfer_cifar10_solutions.ipynb") == ["cifar-10"]
    assert catalogue.datasets_for("05_transfer_cifar10.ipynb") == ["cifar-10"]
    assert catalogue.datasets_for("00_start_here.ipynb") == [] and catalogue.datasets_for("99_unknown.ipynb") == []
