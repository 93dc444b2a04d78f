"""Where the course's own files are (``notebooks/``, ``data/``, ``requirements.txt``), however
``helpers`` is installed.

In a clone with the editable install of ``make lab`` the package sits inside the checkout. Installed
as a wheel (``pip install .``), it lives in site-packages while the lessons stay in the clone, so
the checkout is found from the working folder instead: the kernel of a lesson runs in
``notebooks/``, a shell at the root. ``COURSE_ROOT`` names it explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT_ENV = "COURSE_ROOT"
MARKER = "notebooks"  # a folder only the course checkout has


def course_root() -> Path:
    """The course checkout: ``$COURSE_ROOT``; else the package's parent when it holds ``notebooks/``;
    else the working folder or its nearest parent holding ``notebooks/``; else the working folder."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    beside_package = Path(__file__).resolve().parent.parent
    if (beside_package / MARKER).is_dir():
        return beside_package
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if (folder / MARKER).is_dir()), here)
