"""Lesson 11's Flower app (Flower's split: the task is :mod:`helpers.flower_rounds`; the apps are thin)."""
