"""Models: the built-in Llama-style LM, Hugging Face loading, checkpoints, training, evaluation."""

from tikmix.models.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    check_compatible,
    checkpoint_hash,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
)
from tikmix.models.evaluate import mean_loss, multiple_choice_accuracy, sequence_losses
from tikmix.models.hf import load_hf_model
from tikmix.models.llama import ModelConfig, TinyLlama, model_flops_per_token, num_parameters
from tikmix.models.loss import summed_loss, token_losses
from tikmix.models.train import (
    TrainResult,
    TrainRun,
    TrainSettings,
    build_optimizer,
    learning_rate,
    train,
    train_on_mixture,
)

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "ModelConfig",
    "TinyLlama",
    "TrainResult",
    "TrainRun",
    "TrainSettings",
    "build_optimizer",
    "check_compatible",
    "checkpoint_hash",
    "learning_rate",
    "load_checkpoint",
    "load_hf_model",
    "load_optimizer_state",
    "mean_loss",
    "model_flops_per_token",
    "multiple_choice_accuracy",
    "num_parameters",
    "save_checkpoint",
    "sequence_losses",
    "summed_loss",
    "token_losses",
    "train",
    "train_on_mixture",
]
