"""The published training step on one 3-frame clip, and its module form for DistributedDataParallel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dataset.finetune import IGNORE_LABEL
from model.stm import STM


def clip_loss(
    model: STM, frames: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One training clip: memorise frame 0 with its true trimap, segment frame 1, memorise it with
    its prediction (gradient flows through it), segment frame 2 against both.

    frames: 3 x 3 x h x w; labels: 3 x h x w (IGNORE_LABEL where invalid).
    Returns the mean cross-entropy over frames 1 and 2 and their predicted probabilities.
    """
    first = labels[0].clone()
    first[first == IGNORE_LABEL] = 0  # pixels from outside the keyframe: background in memory
    first_probs = F.one_hot(first, 3).permute(2, 0, 1).unsqueeze(0).to(frames.dtype)
    memory = [model.memorize(frames[0:1], first_probs)]
    losses, predictions = [], []
    for t in (1, 2):
        logits = model.segment(frames[t : t + 1], memory)  # 1, 3, h, w
        losses.append(
            F.cross_entropy(logits.float(), labels[t : t + 1], weight=class_weights, ignore_index=IGNORE_LABEL)
        )
        probs = F.softmax(logits, dim=1)
        predictions.append(probs.detach())
        if t == 1:
            memory.append(model.memorize(frames[1:2], probs))
    return torch.stack(losses).mean(), predictions


class TrainingStep(nn.Module):
    """The training step as a module, so that DistributedDataParallel can wrap it.

    forward(frames: B x 3 x 3 x h x w, labels: B x 3 x h x w) -> (mean loss over the batch,
    predictions of the last clip).
    """

    def __init__(self, model: STM, class_weights: torch.Tensor, memory_format: torch.memory_format, autocast) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("class_weights", class_weights)
        self.memory_format = memory_format
        self.autocast = autocast

    def forward(self, frames: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        losses = []
        with self.autocast():
            for b in range(frames.shape[0]):
                clip_frames = frames[b].contiguous(memory_format=self.memory_format)  # 3 frames x 3 x h x w
                loss, predictions = clip_loss(self.model, clip_frames, labels[b], self.class_weights)
                losses.append(loss)
        return torch.stack(losses).mean(), predictions
