"""Towers and the multi-tower model (features only; losses live in vsearch.losses)."""

from vsearch.models.multitower import MultiTowerModel, build_model, fuse, load_model

__all__ = ["MultiTowerModel", "build_model", "fuse", "load_model"]
