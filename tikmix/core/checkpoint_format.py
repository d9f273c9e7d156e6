"""The checkpoint directory's file names: one home for every reader and writer.

A built-in checkpoint (:mod:`tikmix.models.checkpoint`) holds its weights, its model config and
its provenance (``tikmix.json``: format, step, tokens seen, mixture, tokenizer, seed); a Hugging
Face directory holds the first two and may lack the third. The start-up checks
(:mod:`tikmix.validation`) and the ranking check (:mod:`tikmix.analysis.ranking`) read the same
names without loading a model.
"""

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "tikmix.json"
OPTIMIZER_FILE = "optimizer.pt"
