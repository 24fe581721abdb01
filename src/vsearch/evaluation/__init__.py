"""Evaluation: pure retrieval metrics with bootstrap CIs, the promotion gate, the HTML report.

`metrics` is pure numpy (no torch, no I/O); `report` renders one self-contained HTML
file for the reviewer. Nothing is imported here so that importing a submodule stays cheap.
"""
