"""Pictures of training clips (``training_images/``): frame, true trimap, prediction."""

from __future__ import annotations

import numpy as np
import torch

from dataset.finetune import IGNORE_LABEL
from dataset.trimap import LABEL_GREY
from model.stm import IMAGENET_MEAN, IMAGENET_STD


def training_sheet(frames: torch.Tensor, labels: torch.Tensor, predictions: list[torch.Tensor]) -> np.ndarray:
    """A picture of one training clip (BGR uint8): a row per frame with the frame, its true
    trimap (invalid pixels red) and the prediction (frame 0: the memorised truth)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rows = []
    for t in range(frames.shape[0]):
        rgb = ((frames[t].float().cpu() * std + mean).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        truth = labels[t].cpu().numpy()
        truth_img = np.repeat(LABEL_GREY[np.minimum(truth, 2)][..., None], 3, axis=2)
        truth_img[truth == IGNORE_LABEL] = (255, 0, 0)
        if t == 0:
            predicted = truth_img
        else:
            pred = predictions[t - 1][0].argmax(0).cpu().numpy()
            predicted = np.repeat(LABEL_GREY[pred][..., None], 3, axis=2)
        rows.append(np.concatenate([rgb, truth_img, predicted], axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[..., ::-1])
