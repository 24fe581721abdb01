"""Feast features: point-in-time training sets, materialization, online product lookup.

Definitions live in the project's ``feature_repo/``; ``repo`` turns them into a working Feast
repo for a data folder. ``online.lookup_products`` is what the search service calls. Feast is
imported inside the functions (it costs seconds).
"""
