"""Drift monitoring: reference snapshots saved with each model, Evidently drift reports.

``reference`` builds a window snapshot (query and product embeddings, features, retrieval
health) from a data folder and a model; ``drift`` compares a current window with the
reference; ``simulate`` makes shifted / same-distribution windows for demos and tests.
"""
