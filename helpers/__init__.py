"""Helpers for the course *Federated and Transfer Learning for Recommender Systems*.

Importing the package loads TensorFlow quietly: its C++ start-up lines (CPU features,
"could not find cuda drivers", the cuInit probe) are printed before Python can filter
them, so the import runs with the process's stderr pointed at /dev/null and with
``TF_CPP_MIN_LOG_LEVEL=3`` (errors raised in Python still surface as exceptions).
Set ``TF_CPP_MIN_LOG_LEVEL`` yourself before importing to see them again.

``COURSE_IMPORT_TENSORFLOW=0`` skips that import: the processes of lesson 08's Flower
deployment set it, so a ServerApp (numpy only) never loads TensorFlow and a ClientApp loads it
only when it trains (Flower starts a fresh process for every message).
"""

from __future__ import annotations

import os
import sys


def _import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (some embedded interpreters)
        import tensorflow  # noqa: F401
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the GPU probe logs here, not at the first operation
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


if os.environ.get("COURSE_IMPORT_TENSORFLOW", "1") != "0":
    _import_tensorflow_quietly()
