"""Query-side serving: ``vsearch search`` (one query from the command line) and ``vsearch serve``
(FastAPI service with A/B routing and a web page). FastAPI/uvicorn/pymilvus load lazily."""
