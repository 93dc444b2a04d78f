"""TensorFlow, loaded without its C++ start-up lines: ``from helpers.tf_quiet import tf``.

TensorFlow prints CPU-feature notes, "could not find cuda drivers" and the cuInit probe from C++
before Python can filter them, so the first import runs with the process's stderr pointed at
/dev/null and with ``TF_CPP_MIN_LOG_LEVEL=3`` (errors raised in Python still surface as
exceptions). Set ``TF_CPP_MIN_LOG_LEVEL`` yourself before importing to see them again.

Only the modules that train or evaluate a model import this (``softmax``, ``mf``, the vision and
cross-domain modules, and ``federated`` when a client trains); ``import helpers`` and the light
modules (``findings``, ``exercises``, ``runtimes``, ``data``, ``fedcore`` …) never load TensorFlow.
A notebook that uses ``tf`` or ``keras`` itself imports this module first.
"""

from __future__ import annotations

import os
import sys


def load():
    """The ``tensorflow`` module, imported quietly the first time (a no-op once it is loaded)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor (some embedded interpreters)
        import tensorflow

        return tensorflow
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow

        tensorflow.config.list_physical_devices()  # the GPU probe logs here, not at the first operation
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    return tensorflow


tf = load()
