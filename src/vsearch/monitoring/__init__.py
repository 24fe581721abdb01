"""Drift monitoring: a reference snapshot per trained model, Evidently drift reports.

``reference`` builds a window snapshot (query and product embeddings, features, retrieval
health) from a data folder and a model: the reference (its own artifact, built from the model
and its training data by ``build_drift_reference``) and any current window alike; ``drift``
compares a current window with the reference; ``simulate`` makes shifted /
same-distribution windows for demos and tests.
"""
