"""What finetuning optimises and how: frozen parameters, the optimizer, the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from model.checkpoint import read_torch_file
from model.stm import STM
from utils.errors import UserError

LR_STRATEGIES = ("const", "poly", "stair")
POLY_POWER = 0.9
STAIR_FACTOR = 0.1
STAIR_STEPS = 3  # stair: the rate drops by STAIR_FACTOR at each third of TOTAL_STEPS


def learning_rate(step: int, base_lr: float, strategy: str, total_steps: int) -> float:
    """The learning rate for 0-based ``step``.

    const: ``base_lr``; poly: ``base_lr * (1 - step / total) ** 0.9``; stair: ``base_lr`` times
    0.1 for each third of the run already done.
    """
    if strategy == "const":
        return base_lr
    if strategy == "poly":
        return base_lr * (1 - min(step, total_steps) / total_steps) ** POLY_POWER
    if strategy == "stair":
        return base_lr * STAIR_FACTOR ** math.floor(STAIR_STEPS * step / total_steps)
    raise UserError(f"TRAIN.LR_STRATEGY {strategy!r} is not one of {', '.join(LR_STRATEGIES)}")


def is_frozen(name: str, freeze_backbone: bool) -> bool:
    """Batch norm stays frozen: parameters whose name contains ``bn`` are not optimised.

    (The downsample branch's batch norm, ``downsample.1``, has no ``bn`` in its name and stays
    trainable, as in the published code.) FREEZE_BACKBONE also freezes the two ResNet trunks.
    """
    if "bn" in name:
        return True
    if freeze_backbone and name.startswith(("Encoder_M.", "Encoder_Q.")):
        return not name.startswith(("Encoder_M.conv1_m", "Encoder_M.conv1_o"))
    return False


def select_parameters(model: STM, freeze_backbone: bool) -> list[torch.nn.Parameter]:
    params = []
    for name, param in model.named_parameters():
        frozen = is_frozen(name, freeze_backbone)
        param.requires_grad_(not frozen)
        if not frozen:
            params.append(param)
    return params


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, weight_decay: float):
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise UserError(f"TRAIN.OPTIMIZER {name!r} is not supported; use adam (published) or sgd")


def load_optimizer_state(optimizer: torch.optim.Optimizer, path: str) -> int:
    """Restore the optimizer from TRAIN.LOAD_OPT; returns the step it was saved at."""
    state = read_torch_file(path, "TRAIN.LOAD_OPT")
    if not isinstance(state, dict) or "optimizer" not in state or "step" not in state:
        raise UserError(
            f"TRAIN.LOAD_OPT {path} is not an optimizer file written by online_finetune_test.py "
            "(optimizer_<n>.pth.tar); clear TRAIN.LOAD_OPT to start afresh"
        )
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise UserError(
            f"TRAIN.LOAD_OPT {path} does not fit this run's parameters ({exc}); it belongs to another "
            "configuration (FREEZE_BACKBONE, OPTIMIZER): clear TRAIN.LOAD_OPT"
        ) from exc
    return int(state["step"])
