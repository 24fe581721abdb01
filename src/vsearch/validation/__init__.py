"""Data validation: Great Expectations suites generated from ``vsearch.schema`` + image probes.

``vsearch data validate --data DIR --out DIR`` (``cli``); ``validate.validate_dataset`` is
the function behind it. Heavy imports (great_expectations) happen inside the functions.
"""
