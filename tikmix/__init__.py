"""TiKMiX: semi-dynamic data mixtures for LLM pre-training via Group Influence."""

__version__ = "0.1.0"
