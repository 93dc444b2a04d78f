"""Real datasets as tidy pandas frames, read straight from verified archives.

Every loader goes through :func:`helpers.download.fetch` (cache, checksum, mirror)
and checks the structure of what it reads, so a malformed file gives a
:class:`DataFormatError` that names the file and the problem.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.download import fetch


class DataFormatError(ValueError):
    """A data file does not have the structure its loader expects."""


@dataclass(frozen=True)
class RatingsData:
    """Explicit ratings of one dataset, with dense indices.

    Attributes:
        name: dataset name, for example ``"movielens/latest-small"``.
        ratings: one row per rating with columns ``user_id, item_id, rating,
            timestamp`` (original ids; timestamp in Unix seconds) and ``user_idx,
            item_idx`` (dense 0-based ints).
        items: one row per catalogue item, indexed by ``item_idx``, with columns
            ``item_id, title, genres`` (genres joined by ``|``).
    """

    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame

    @property
    def n_users(self) -> int:
        """Number of distinct users (the dense ``user_idx`` runs 0..n_users-1)."""
        return int(self.ratings["user_idx"].max()) + 1

    @property
    def n_items(self) -> int:
        """Catalogue size (the dense ``item_idx`` runs 0..n_items-1)."""
        return len(self.items)

    def user_idx(self, user_id: int) -> int:
        """Dense index of an original user id (KeyError if unknown)."""
        lookup = self.ratings.drop_duplicates("user_id").set_index("user_id")["user_idx"]
        return int(lookup.loc[user_id])


MOVIELENS_VARIANTS = {"latest-small": "ml-latest-small", "100k": "ml-100k"}

_ML100K_GENRES = (
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|"
    "Fantasy|Film-Noir|Horror|Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western"
).split("|")


def _read_member(archive: zipfile.ZipFile, member: str, source: Path) -> bytes:
    try:
        return archive.read(member)
    except KeyError:
        raise DataFormatError(f"{source} has no member {member!r}; is it the right archive?") from None


def validate_ratings(
    ratings: pd.DataFrame, source: str, low: float, high: float
) -> pd.DataFrame:
    """Check a ratings frame read from ``source`` and return it with clean dtypes.

    Args:
        ratings: frame with columns ``user_id, item_id, rating`` (and optionally
            ``timestamp``).
        source: file name used in error messages.
        low, high: the inclusive range of valid ratings.

    Returns:
        The same rows with integer ids, float32 ratings and int64 timestamps.

    Raises:
        DataFormatError: missing values, non-numeric fields, ratings out of range.
    """
    columns = [c for c in ("user_id", "item_id", "rating", "timestamp") if c in ratings]
    numeric = ratings[columns].apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataFormatError(
            f"{source}: {int(bad.sum())} row(s) have missing or non-numeric fields; "
            f"first at data row {row + 1}: {ratings.iloc[row].tolist()}"
        )
    out_of_range = (numeric["rating"] < low) | (numeric["rating"] > high)
    if out_of_range.any():
        row = int(np.flatnonzero(out_of_range.to_numpy())[0])
        raise DataFormatError(
            f"{source}: {int(out_of_range.sum())} rating(s) outside {low}–{high}; "
            f"first at data row {row + 1}: {numeric['rating'].iloc[row]}"
        )
    for column in ("user_id", "item_id", "timestamp"):
        if column in numeric:
            if (numeric[column] != np.floor(numeric[column])).any():
                raise DataFormatError(f"{source}: column {column} must hold integers")
            numeric[column] = numeric[column].astype(np.int64)
    numeric["rating"] = numeric["rating"].astype(np.float32)
    return numeric


def _index(ratings: pd.DataFrame, items: pd.DataFrame, name: str) -> RatingsData:
    """Attach dense user/item indices; items not in the catalogue are an error."""
    items = items.drop_duplicates("item_id").sort_values("item_id").reset_index(drop=True)
    item_idx = pd.Series(np.arange(len(items)), index=items["item_id"].to_numpy())
    unknown = ~ratings["item_id"].isin(item_idx.index)
    if unknown.any():
        raise DataFormatError(
            f"{name}: {int(unknown.sum())} rating(s) refer to items missing from the "
            f"item table, e.g. item_id {int(ratings.loc[unknown, 'item_id'].iloc[0])}"
        )
    users = np.sort(ratings["user_id"].unique())
    ratings = ratings.assign(
        user_idx=np.searchsorted(users, ratings["user_id"].to_numpy()).astype(np.int32),
        item_idx=item_idx.loc[ratings["item_id"].to_numpy()].to_numpy().astype(np.int32),
    ).reset_index(drop=True)
    items.index.name = "item_idx"
    return RatingsData(name=name, ratings=ratings, items=items)


def load_movielens(variant: str = "latest-small") -> RatingsData:
    """Load MovieLens ratings and movie titles.

    Args:
        variant: ``"latest-small"`` (100,836 ratings, 610 users, 9,742 movies;
            ratings 0.5–5 in half stars) or ``"100k"`` (100,000 ratings, 943 users,
            1,682 movies; ratings 1–5).

    Returns:
        A :class:`RatingsData`; the item catalogue is every movie in the movie table.
    """
    if variant not in MOVIELENS_VARIANTS:
        raise ValueError(f"unknown MovieLens variant {variant!r}; choose from {sorted(MOVIELENS_VARIANTS)}")
    key = MOVIELENS_VARIANTS[variant]
    path = fetch(key)
    with zipfile.ZipFile(path) as archive:
        if variant == "latest-small":
            raw = pd.read_csv(io.BytesIO(_read_member(archive, f"{key}/ratings.csv", path)))
            raw = raw.rename(columns={"userId": "user_id", "movieId": "item_id"})
            items = pd.read_csv(io.BytesIO(_read_member(archive, f"{key}/movies.csv", path)))
            items = items.rename(columns={"movieId": "item_id"})
            low, high = 0.5, 5.0
        else:
            raw = pd.read_csv(
                io.BytesIO(_read_member(archive, f"{key}/u.data", path)), sep="\t", header=None,
                names=["user_id", "item_id", "rating", "timestamp"],
            )
            table = pd.read_csv(
                io.BytesIO(_read_member(archive, f"{key}/u.item", path)), sep="|", header=None,
                encoding="latin-1", names=["item_id", "title", "date", "video", "url", *_ML100K_GENRES],
            )
            flags = table[_ML100K_GENRES].to_numpy(dtype=bool)
            genres = ["|".join(g for g, f in zip(_ML100K_GENRES, row) if f) for row in flags]
            items = table[["item_id", "title"]].assign(genres=genres)
            low, high = 1.0, 5.0
    missing = {"user_id", "item_id", "rating", "timestamp"} - set(raw.columns)
    if missing:
        raise DataFormatError(f"{path.name}: ratings table lacks column(s) {sorted(missing)}")
    ratings = validate_ratings(raw, f"{path.name} (ratings)", low, high)
    return _index(ratings, items[["item_id", "title", "genres"]], f"movielens/{variant}")
