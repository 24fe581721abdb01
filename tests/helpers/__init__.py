"""Helpers shared by tests in several folders (``tests/`` is on sys.path: tests/conftest.py's folder).

Import them as ``from helpers.<module> import ...``; a helper used by one folder only stays there.
"""
