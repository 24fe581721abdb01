"""Milvus indexing: backfill catalog embeddings into a versioned collection, verify, swap the alias.

``vsearch index backfill | rollback | gc | status`` (see :mod:`vsearch.indexing.cli`). Heavy
imports (pymilvus, torch) happen inside the functions that need them.
"""
