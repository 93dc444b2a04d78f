"""The start-here check a teacher runs on every laptop (``notebooks/00_start_here.ipynb``).

Everything here looks and measures; nothing downloads. Functions return small tables
(pandas DataFrames) so the notebook only shows them.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import pandas as pd

from helpers import download, runtimes
from helpers.paths import course_root
from helpers.catalogue import OPTIONAL_DATA, lessons_using


# (section of the source article, notebook, the heading of the cell that teaches it)
COURSE_MAP = [
    ("Recommendation as softmax scoring, P(c|u) = exp(s_c) / Σ exp(s_c')", "01_softmax_scoring.ipynb", "## 2. Scores and the softmax"),
    ("Top-k lists and ranking metrics", "01_softmax_scoring.ipynb", "## 3. The protocol: leave the last one out"),
    ("The gradient-descent update θ ← θ − η∇L", "02_gradient_descent.ipynb", "## 2. The update by hand, checked against Keras"),
    ("The federated-learning round and the FedSGD formula", "03_federated_rounds.ipynb", "## 2. The round, in five steps"),
    ("FedSGD and FedAvg against centralised training", "03_federated_rounds.ipynb", "## 3. Centralised vs FedSGD vs FedAvg"),
    ("The softmax recommender trained by FedSGD and FedAvg, judged by its top-10 lists", "04_federated_softmax_ranking.ipynb",
     "## 5. Centralised vs FedSGD vs FedAvg, ranked"),
    ("Challenge: communication cost (the full softmax sends the whole item table)", "04_federated_softmax_ranking.ipynb",
     "## 6. What the full softmax costs"),
    ("Transfer learning θ_target = θ_source + W", "05_transfer_cifar10.ipynb", "## 4. Four ways to learn the target task"),
    ("CIFAR-10: source classes → target classes", "05_transfer_cifar10.ipynb", "## 1. Two tasks that share no class"),
    ("Movie → music, f_target = f_source + b_target", "06_movie_to_music_transfer.ipynb", "## 2. The methods, as formulas"),
    ("Future work: federated + transfer learning", "07_federated_transfer.ipynb", "## 2. Two starting points"),
    ("Future work: federated + transfer learning for a recommender (cold start)", "08_federated_cold_start.ipynb",
     "## 1. Who holds what, who sends what"),
    ("Challenge: communication and computation cost", "09_federating_costs.ipynb", "## 2. Communication: compress the uploads"),
    ("Challenge: data mismatch", "07_federated_transfer.ipynb", "## 3. How much the clients disagree"),
    ("Challenge: data mismatch — remedies for client drift", "09_federating_costs.ipynb", "## 4. Client drift, and two remedies"),
    ("Challenge: privacy and security", "10_privacy_security.ipynb", "## 1. The leak"),
]


DISTRIBUTION = "fedtl-course-helpers"  # the name pyproject.toml gives the course's package


EXTRA_USES = {None: "the lessons", "test": "the tests (make test)", "site": "the website (make site)"}


def required_versions(distribution: str = DISTRIBUTION) -> dict[str, tuple[str, str | None]]:
    """Package → (version specifier, extra), as the installed course package declares them: extra
    None for pyproject.toml's dependencies (what the lessons need), ``"test"`` or ``"site"`` for the
    extras; the same whether the package is installed editable or as a wheel."""
    required = {}
    for line in metadata.requires(distribution) or []:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*([~=<>!][^;]*)?(?:;\s*extra\s*==\s*\W(\w+)\W)?",
                             line.strip())
        if match:
            required[match.group(1).lower()] = ((match.group(2) or "").strip(), match.group(3))
    return required


def package_versions() -> pd.DataFrame:
    """Python and every declared package: ``package, needed for, required, installed, ok``. A package
    of an extra (tests, website) that is not installed is ok: the lessons run without it."""
    rows = [{"package": "python", "needed for": EXTRA_USES[None], "required": ">=3.11",
             "installed": platform.python_version(), "ok": sys.version_info >= (3, 11)}]
    for name, (spec, extra) in required_versions().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        rows.append({"package": name, "needed for": EXTRA_USES.get(extra, f"the {extra} extra"), "required": spec,
                     "installed": installed or "missing",
                     "ok": _satisfies(installed, spec) if installed is not None else extra is not None})
    return pd.DataFrame(rows)


def _satisfies(installed: str, spec: str) -> bool:
    """A ``~=X.Y.Z`` / ``==`` / ``>=`` check without extra dependencies (enough for the course's pins)."""
    if not spec:
        return True
    operator, wanted = re.match(r"(~=|==|>=)\s*(.+)", spec).groups()
    have = [int(p) for p in re.findall(r"\d+", installed)[:3]]
    want = [int(p) for p in re.findall(r"\d+", wanted)[:3]]
    if operator == "==":
        return have[:len(want)] == want
    if operator == ">=":
        return have >= want
    return have >= want and have[:len(want) - 1] == want[:-1]  # ~=X.Y.Z: ≥ X.Y.Z and == X.Y.*


def dataset_status(check_publisher: bool = True, timeout: float = 3.0) -> pd.DataFrame:
    """Where each archive can come from: ``dataset, used by lessons, file, cache, mirror, publisher, what to do``.

    ``mirror`` is None when ``COURSE_DATA_MIRROR`` is not set; ``publisher`` is None when not checked.
    """
    base = download.mirror_base()
    specs = download.REGISTRY

    def look(name):
        spec = specs[name]
        cached = (download.cache_dir() / spec.filename).exists()
        at_mirror = download.reachable(base + spec.filename, timeout) if base else None
        at_publisher = download.reachable(spec.url, timeout) if check_publisher else None
        if cached:
            advice = "ready"
        elif at_mirror:
            advice = "ready: copied from the mirror on first use"
        elif at_publisher:
            advice = "ready: downloaded from the publisher on first use"
        elif name in OPTIONAL_DATA:  # a lesson does without it
            advice = f"optional, not reachable: {OPTIONAL_DATA[name][1]}"
        else:
            advice = (f"not reachable: set {download.MIRROR_ENV} to a classroom mirror, or copy "
                      f"{spec.filename} into the data cache ({download.cache_dir().name}/)")
        return {"dataset": name, "used by lessons": ", ".join(lessons_using(name)) or "benchmarks only",
                "file": spec.filename, "cache": cached, "mirror": at_mirror,
                "publisher": at_publisher, "what to do": advice}

    with ThreadPoolExecutor(max_workers=len(specs)) as pool:
        return pd.DataFrame(list(pool.map(look, specs)))


def predicted_run_times(seconds_here: float, times: dict | None = None) -> pd.DataFrame:
    """Each lesson's measured run times scaled by this laptop's calibration: ``lesson, full, fast`` in words."""
    times = times or runtimes.load_times()
    reference = times.get("calibration_seconds")
    if not reference:
        raise ValueError("helpers/run_times.json has no calibration_seconds; run python -m helpers.runtimes calibrate")
    factor = seconds_here / reference
    def phrase(entry, mode):
        return runtimes.minutes_phrase(entry[mode] * factor) if mode in entry else "not measured yet"

    rows = [{"lesson": name, "full": phrase(entry, "full"), "fast (COURSE_FAST=1)": phrase(entry, "fast")}
            for name, entry in times["notebooks"].items()]
    return pd.DataFrame(rows).set_index("lesson")


def course_map(root: Path | None = None) -> pd.DataFrame:
    """Each section of the source article → the lesson and the cell (1-based) that covers it
    (``root``: the course checkout, by default :func:`helpers.paths.course_root`)."""
    import nbformat

    root = root or course_root()

    rows = []
    for section, name, heading in COURSE_MAP:
        cells = nbformat.read(root / "notebooks" / name, as_version=4).cells
        index = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.startswith(heading)), None)
        if index is None:
            raise LookupError(f"{name} has no cell starting with {heading!r}: update helpers.startup.COURSE_MAP")
        rows.append({"article section": section, "lesson": name, "cell": index + 1, "heading": heading.lstrip("# ")})
    return pd.DataFrame(rows)


def cpu_summary() -> str:
    """One line: cores, processor, operating system, Python."""
    return (f"{os.cpu_count()} CPU cores, {platform.machine()} {platform.processor() or ''}".strip()
            + f"; {platform.system()} {platform.release()}; Python {platform.python_version()}")
