"""The project's images: the one place their tags are written.

``IMAGE`` is the project image (``dockerfiles/Dockerfile``: ``pip install -c constraints.txt
'.[all]'`` with CPU torch on python:3.11-slim); ``GPU_IMAGE`` the GPU training/backfill image
(``dockerfiles/Dockerfile.gpu``: the same pins, with CUDA torch + torchvision). Tags follow the
package version (a test holds them to pyproject.toml). A deployment overrides the image at
compile time (``vsearch pipeline compile --set image=REGISTRY/vsearch:TAG`` or ``image:`` in
the pipeline config), never from the environment: the compiled YAML must not depend on who
compiled it.

Components (``components/image.py``), the pipeline config, the TrainJob renderer and the
rollout writer all read them from here.
"""

IMAGE = "ghcr.io/vsearch-ml/vsearch:0.1.0-python3.11"
GPU_IMAGE = "ghcr.io/vsearch-ml/vsearch-gpu:0.1.0-cuda13.0"
