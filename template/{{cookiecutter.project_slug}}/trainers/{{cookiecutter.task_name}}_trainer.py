"""{{ cookiecutter.task_name }}: classify the example spirals with a residual MLP.

To make this task yours, replace the data in ``build_datasets``, the model and
``step``. The base class handles the loop, checkpoints, logging and resume.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
{%- if cookiecutter.framework == 'pytorch' %}
from torch import nn
{%- endif %}

from layers import ResidualMLP
{%- if cookiecutter.framework == 'lightning' %}
from trainers.base_trainer import BaseModule
{%- else %}
from trainers.base_trainer import BaseTrainer
{%- endif %}
from utils.dataset import NUM_CLASSES, NUM_FEATURES, TensorBatchDataset, load_splits

{% if cookiecutter.framework == 'lightning' %}
class {{ cookiecutter.__task_class }}Module(BaseModule):
    """The task's LightningModule; every constructor argument is saved in its checkpoints."""

    main_metric = "val_acc"
    main_mode = "max"

    def __init__(self, hidden_size: int, depth: int, dropout: float, **hparams: Any) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = ResidualMLP(NUM_FEATURES, hidden_size, NUM_CLASSES, depth, dropout)
{% else %}
class {{ cookiecutter.__task_class }}Trainer(BaseTrainer):
    """The parts of the training loop that are this task's own."""

    main_metric = "val_acc"
    main_mode = "max"

    def build_model(self) -> nn.Module:
        return ResidualMLP(NUM_FEATURES, self.hp.hidden_size, NUM_CLASSES, self.hp.depth, self.hp.dropout)
{% endif %}
    def build_datasets(self) -> dict[str, TensorBatchDataset]:
        return load_splits()

    def step(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, labels = batch
        logits = self.model(features)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}
