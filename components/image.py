"""The project image every component runs on: the one place its tag is written.

Built from the repository (``pip install -c constraints.txt '.[all]'`` on python:3.11);
the tag follows the package version. A deployment overrides it at compile time
(``vsearch pipeline compile --set image=REGISTRY/vsearch:TAG`` or ``image:`` in the pipeline
config), never from the environment: the compiled YAML must not depend on who compiled it.
"""

IMAGE = "ghcr.io/vsearch-ml/vsearch:0.1.0-python3.11"
