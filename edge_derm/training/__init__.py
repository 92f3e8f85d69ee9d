"""Training: block-wise schedule, sequential plans, checkpoints and resume, distribution strategy.

Importing this package is light: TensorFlow is imported only when training starts.
"""

from __future__ import annotations

from edge_derm.training.config import TrainConfig
from edge_derm.training.evaluate import evaluate_run
from edge_derm.training.experiment import run_experiment
from edge_derm.training.sequential import list_plans, load_plan, run_plan
from edge_derm.training.trainer import TrainingError, train

__all__ = ["TrainConfig", "TrainingError", "evaluate_run", "list_plans", "load_plan", "run_experiment",
           "run_plan", "train"]
