"""vsearch: multimodal visual-search models (Zhu et al., KDD 2024) trained and shipped with KFP."""

__version__ = "0.1.0"
