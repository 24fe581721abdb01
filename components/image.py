"""The images components run on: ``vsearch.images`` (the one place their tags are written)."""

from vsearch.images import GPU_IMAGE, IMAGE

__all__ = ["GPU_IMAGE", "IMAGE"]
