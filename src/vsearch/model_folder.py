"""The names of the files in a saved model folder, written once.

Training writes the folder (``training.loop`` and ``MultiTowerModel.save``); evaluation,
indexing, monitoring, the gate and the TrainJob launcher read it. A model folder holds::

    model.safetensors     weights (never pickle)
    vsearch_model.json    format version and the model config (towers, embed_dim, ...)
    image_backbone/ text_backbone/ tokenizer/   what the towers and the title tokenizer load
    run_config.yaml       the whole run config it was trained with
    train_summary.json    steps, losses, timings, fingerprint and code version
    metrics.jsonl         one line of training metrics per logged step

The drift reference is not part of it: ``build_drift_reference`` writes it as its own artifact
(``monitoring.reference.build_reference``). Folders trained before that step may still hold a
``drift_reference/`` (``REFERENCE_DIR``), which the drift monitor still reads.
"""

from __future__ import annotations

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "vsearch_model.json"
IMAGE_BACKBONE_DIR = "image_backbone"
TEXT_BACKBONE_DIR = "text_backbone"
TOKENIZER_DIR = "tokenizer"
RUN_CONFIG_FILE = "run_config.yaml"
SUMMARY_FILE = "train_summary.json"
METRICS_LOG = "metrics.jsonl"
REFERENCE_DIR = "drift_reference"  # only in models trained before build_drift_reference (read, never written)
