"""Helpers for the course *Federated and Transfer Learning for Recommender Systems*.

Importing the package loads nothing heavy: modules that train a model load TensorFlow through
:mod:`helpers.tf_quiet` (without its C++ start-up lines) when they are imported or first used, so
``import helpers.findings`` or a Flower ServerApp (numpy only) never pays for it.
"""
