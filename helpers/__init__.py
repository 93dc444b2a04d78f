"""Helpers for the course *Federated and Transfer Learning for Recommender Systems*."""
