"""Thin Kubeflow Pipelines components, one ``verb_noun`` per module.

Each component unpacks its artifacts, calls one function of the ``vsearch`` package with
plain types and paths, and writes its outputs (typed artifacts: Dataset, Model, Metrics,
HTML, Markdown). All of them run on the project image (``components.image.IMAGE``) with
``install_kfp_package=False`` and no ``packages_to_install``: the image carries vsearch and
kfp. Imports of the package happen inside the function bodies, because KFP ships only the
function's source to the container.
"""
