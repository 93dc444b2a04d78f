"""Real datasets as tidy pandas frames, read straight from verified archives.

Every loader goes through :func:`helpers.download.fetch` (cache, checksum, mirror)
and checks the structure of what it reads, so a malformed file gives a
:class:`DataFormatError` that names the file and the problem.
"""

from __future__ import annotations

import io
import pickle
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.download import cache_dir, fetch, file_digests


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


@dataclass(frozen=True)
class ImageData:
    """Images with integer labels.

    Attributes:
        x_train, x_test: uint8 (N, 32, 32, 3) images, channels last.
        y_train, y_test: int64 (N,) class indices — shape (N,), not (N, 1).
        class_names: names of the classes, indexed by label.
        build: sha256 of the archive the images came from ("" when built in memory), so
            results and cached models can say which build of the dataset they used.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    build: str = ""

    @property
    def build_name(self) -> str:
        """One line naming the build: the official archive, a known development build, or another one."""
        from helpers.download import REGISTRY

        if self.build == REGISTRY["cifar-10"].sha256:
            return "the official CIFAR-10 archive"
        known = KNOWN_CIFAR_BUILDS.get(self.build)
        return known or (f"a build of CIFAR-10 that is not the official archive ({len(self.x_train):,} training "
                         f"images, sha256 {self.build[:12]}…)")


KNOWN_CIFAR_BUILDS = {  # sha256 → description, for the builds the course's development mirrors list
    "1f335873874179eb0fbfaf17d1f4ccede54cf0c0517177760ff1055b52b0e25e":
        "CIFAR-10 from a JPEG rebuild of the full dataset (all 60,000 images, official layout and order)",
    "0d77e8b7ec2491bcaff5d54a7b2a45af42941f74fcf32ddd3331d101a00798d6":
        "a 5,438-image subset of CIFAR-10 (the development mirror)",
}


CIFAR_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _read_cifar_batch(archive, member: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch → (images (n, 32, 32, 3) uint8, labels (n,) int64), any n."""
    try:
        handle = archive.extractfile(f"cifar-10-batches-py/{member}")
    except KeyError:
        raise DataFormatError(f"{source} has no member cifar-10-batches-py/{member}") from None
    batch = pickle.load(handle, encoding="bytes")
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataFormatError(f"{source}:{member}: expected uint8 rows of 3072 pixels, got {data.dtype} {data.shape}")
    if len(labels) != len(data):
        raise DataFormatError(f"{source}:{member}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"{source}:{member}: labels outside 0–9")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cap_per_class(x: np.ndarray, y: np.ndarray, cap: int | None) -> tuple[np.ndarray, np.ndarray]:
    if cap is None:
        return x, y
    keep = np.concatenate([np.flatnonzero(y == c)[:cap] for c in np.unique(y)])
    keep.sort()
    return x[keep], y[keep]


def load_cifar10(per_class_cap: int | None = None) -> ImageData:
    """Load CIFAR-10 from the official python archive (or a mirror's listed build).

    Each batch file is read as it is and the batches are concatenated, so an archive
    whose batches hold fewer than 10,000 images (a subset) loads correctly.

    Args:
        per_class_cap: keep at most this many images per class in each of train and
            test (the first ones, in file order); None keeps everything.
    """
    if per_class_cap is not None and per_class_cap < 1:
        raise ValueError(f"per_class_cap must be ≥ 1 or None, got {per_class_cap}")
    path = fetch("cifar-10")
    try:
        with tarfile.open(path, "r:gz") as archive:
            train = [_read_cifar_batch(archive, member, path) for member in CIFAR_TRAIN_BATCHES]
            x_test, y_test = _read_cifar_batch(archive, "test_batch", path)
            meta = pickle.load(archive.extractfile("cifar-10-batches-py/batches.meta"), encoding="bytes")
    except (tarfile.TarError, EOFError, pickle.UnpicklingError) as error:
        raise DataFormatError(f"{path} is not a readable CIFAR-10 archive: {error}") from error
    names = [name.decode() for name in meta[b"label_names"]]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_train, y_train = _cap_per_class(x_train, y_train, per_class_cap)
    x_test, y_test = _cap_per_class(x_test, y_test, per_class_cap)
    return ImageData(x_train, y_train, x_test, y_test, names, build=file_digests(path)["sha256"])


DOUBAN_DOMAINS = ("movie", "music", "book")


def load_douban(domain: str) -> RatingsData:
    """Douban ratings of one domain (GA-DTCDR release): the same user ids across domains.

    The file is tab-separated ``user item rating`` with no header and no timestamp;
    its structure is checked (three integer columns, ratings 1–5). Item ids are
    domain-local. ``user_idx`` is dense *within this domain*; align domains by
    ``user_id`` (see :mod:`helpers.cross_domain`). There are no titles: items are
    named ``"<domain> #<id>"``.

    Args:
        domain: ``"movie"``, ``"music"`` or ``"book"``.
    """
    if domain not in DOUBAN_DOMAINS:
        raise ValueError(f"unknown Douban domain {domain!r}; choose from {DOUBAN_DOMAINS}")
    path = fetch(f"douban-{domain}")
    try:
        raw = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataFormatError(f"{path.name}: not a tab-separated ratings file ({error})") from error
    if raw.shape[1] != 3:
        raise DataFormatError(f"{path.name}: expected 3 tab-separated columns (user, item, rating), found {raw.shape[1]}")
    raw.columns = ["user_id", "item_id", "rating"]
    raw = raw.replace("", np.nan)
    if raw["rating"].notna().all() and not raw["rating"].str.fullmatch(r"\s*\d+\s*").all():
        raise DataFormatError(f"{path.name}: ratings must be whole numbers 1–5")
    ratings = validate_ratings(raw, path.name, 1, 5)
    items = pd.DataFrame({"item_id": np.sort(ratings["item_id"].unique())})
    items["title"] = [f"{domain} #{i}" for i in items["item_id"]]
    items["genres"] = ""
    return _index(ratings, items, f"douban/{domain}")


def load_lastfm() -> RatingsData:
    """Last.fm HetRec 2011: how often each of 1,892 users played each artist.

    ``rating`` here is not a star rating but a play-count score in 1–5: within each
    user, ``1 + 4 · (rank of log plays among the user's artists, scaled to 0..1)``,
    so every user's favourite artist scores 5 and least played 1. The raw count is
    kept in ``plays``; items carry artist names.
    """
    path = fetch("lastfm-2k")
    with zipfile.ZipFile(path) as archive:
        plays = pd.read_csv(io.BytesIO(_read_member(archive, "user_artists.dat", path)), sep="\t")
        artists = pd.read_csv(io.BytesIO(_read_member(archive, "artists.dat", path)), sep="\t",
                              usecols=[0, 1], encoding="utf-8", quoting=3)
    if list(plays.columns) != ["userID", "artistID", "weight"]:
        raise DataFormatError(f"{path.name}: user_artists.dat has columns {list(plays.columns)}, "
                              f"expected ['userID', 'artistID', 'weight']")
    plays = plays.rename(columns={"userID": "user_id", "artistID": "item_id", "weight": "plays"})
    if (plays["plays"] <= 0).any() or plays.isna().any().any():
        raise DataFormatError(f"{path.name}: play counts must be positive integers")
    rank = plays.groupby("user_id")["plays"].rank(method="average", pct=True)
    size = plays.groupby("user_id")["plays"].transform("size")
    score = np.where(size > 1, 1 + 4 * (rank - 1 / size) / np.maximum(1 - 1 / size, 1e-9), 3.0)
    ratings = plays.assign(rating=score.astype(np.float32))
    items = artists.rename(columns={"id": "item_id", "name": "title"})
    items = pd.concat([items, pd.DataFrame({"item_id": sorted(set(ratings["item_id"]) - set(items["item_id"]))})])
    items["title"] = items["title"].fillna("(unknown artist)")
    items["genres"] = ""
    return _index(ratings, items, "lastfm/hetrec2011-2k")


def main(argv: list[str] | None = None) -> int:
    """``python -m helpers.data download-all | serve``: the classroom mirror (see :mod:`helpers.mirror`)."""
    import argparse

    from helpers import mirror

    parser = argparse.ArgumentParser(prog="python -m helpers.data", description="Fill the data cache, or serve it to a classroom.")
    commands = parser.add_subparsers(dest="command", required=True)
    fill = commands.add_parser("download-all", help="download and verify every archive the course uses")
    fill.add_argument("names", nargs="*", help="only these datasets (default: all)")
    share = commands.add_parser("serve", help="serve the cache read-only over HTTP as a mirror")
    share.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    share.add_argument("--bind", default="127.0.0.1", help="address to listen on (0.0.0.0 for the classroom network)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            mirror.serve(bind=args.bind, port=args.port)
        except (OSError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0
    outcome = mirror.download_all(args.names or None)
    print(download_summary(outcome, asked=set(args.names)))
    return 1 if download_failures(outcome, asked=set(args.names)) else 0


def download_failures(outcome: dict[str, str], asked: set[str] = frozenset()) -> list[str]:
    """The archives of a ``download_all`` outcome whose miss is a failure: required by a lesson, or named in ``asked``."""
    from helpers.catalogue import is_required

    return [name for name, result in outcome.items() if result != "ok" and (is_required(name) or name in asked)]


def download_summary(outcome: dict[str, str], asked: set[str] = frozenset()) -> str:
    """What ``download-all`` prints: one line per archive (ok, FAILED and what needs it, or optional
    and what happens without it), then the archives fetched and which lessons the cache can run."""
    from helpers.catalogue import LESSON_DATA, OPTIONAL_DATA, lessons_missing_data, lessons_using

    failed = set(download_failures(outcome, asked))
    width = max(len(name) for name in outcome)
    lines = []
    for name, result in outcome.items():
        if result == "ok":
            state = "ok (verified)"
        elif name in failed:
            users = lessons_using(name)
            needs = f" (lesson {users[0]} needs it)" if len(users) == 1 else f" (lessons {', '.join(users)} need it)"
            state = f"FAILED{needs if users else ''}: {result}"
        else:
            state = f"optional, not fetched ({OPTIONAL_DATA.get(name, ((), 'no lesson needs it'))[1]}): {result}"
        lines.append(f"{name:<{width}}  {state}")
    have = sum(result == "ok" for result in outcome.values())
    lines.append(f"{have} of {len(outcome)} archives in {cache_dir()}"
                 + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
    from helpers.download import REGISTRY

    blocked = lessons_missing_data({name for name, spec in REGISTRY.items() if not (cache_dir() / spec.filename).exists()})
    ready = [name[:2] for name in LESSON_DATA if name[:2] not in blocked]
    lines.append(f"lessons ready to run: {', '.join(ready)}"
                 + "".join(f"; lesson {lesson} needs {', '.join(archives)}" for lesson, archives in blocked.items()))
    return "\n".join(lines)

if __name__ == "__main__":
    sys.exit(main())
