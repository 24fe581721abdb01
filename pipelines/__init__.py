"""Kubeflow pipeline DAGs and their compile / local-run / submit / schedule tooling.

``vsearch pipeline compile|run-local|submit|schedule`` (pipelines.cli). Pipelines are built
by factories from a compile-time ``PipelineConfig`` (pipelines.config), so GPUs, secrets
and retries are decided when compiling, never by reading the environment.
"""
