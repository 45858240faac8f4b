"""Online finetuning on a clip's keyframes (spec section 7): ``online_finetune_test.py`` as a library."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from dataset.clip import Clip
from dataset.finetune import IGNORE_LABEL, KeyframeClips
from dataset.trimap import LABEL_GREY
from model.checkpoint import load_checkpoint, read_torch_file, save_checkpoint
from model.stm import IMAGENET_MEAN, IMAGENET_STD, STM
from model.weights import trainable_random_init
from utils.distributed import SINGLE, World, barrier
from utils.errors import UserError
from utils.io import atomic_torch_save, atomic_write_png, atomic_write_text
from utils.logs import log_file, progress
from utils.precision import autocast_for

log = logging.getLogger(__name__)

LR_STRATEGIES = ("const", "poly", "stair")
POLY_POWER = 0.9
STAIR_FACTOR = 0.1
STAIR_STEPS = 3  # stair: the rate drops by STAIR_FACTOR at each third of TOTAL_STEPS
RANK_SEED_STRIDE = 1_000_003  # each rank of a seeded run draws its own augmentations


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


@dataclass
class FinetuneResult:
    run_dir: Path
    checkpoint: Path
    steps: int
    last_loss: float
    seconds_per_step: float


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir_for(cfg: CfgNode, cfg_path: Path) -> Path:
    return Path(cfg.SYSTEM.OUTDIR) / f"{cfg_path.stem}{cfg.SYSTEM.EXP_SUFFIX}"


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


def finetune(cfg: CfgNode, cfg_path: Path, clip: Clip, device: torch.device, world: World = SINGLE) -> FinetuneResult:
    """Finetune the STM on ``clip``'s keyframes as ``cfg`` says; returns where things went.

    Under torchrun (``world``) every rank trains on its own augmentations with
    DistributedDataParallel; rank 0 writes the log, images and checkpoints.
    """
    train = cfg.TRAIN
    total_steps = int(train.TOTAL_STEPS)
    if total_steps < 1:
        raise UserError(f"TRAIN.TOTAL_STEPS {total_steps}: must be >= 1")
    if train.BATCH_SIZE_PER_GPU < 1:
        raise UserError(f"TRAIN.BATCH_SIZE_PER_GPU {train.BATCH_SIZE_PER_GPU}: must be >= 1")
    learning_rate(0, train.BASE_LR, train.LR_STRATEGY, total_steps)  # validates the strategy
    seeded = cfg.SYSTEM.RANDOM_SEED > 0
    if seeded:
        seed_everything(cfg.SYSTEM.RANDOM_SEED)  # the same start on every rank

    run_dir = run_dir_for(cfg, cfg_path)
    if clip.path.resolve() in (run_dir.resolve(), *run_dir.resolve().parents):
        raise UserError(
            f"SYSTEM.OUTDIR puts the run folder {run_dir} inside the clip folder {clip.path}; "
            "nothing is written there: choose another SYSTEM.OUTDIR"
        )
    autocast = autocast_for(train.PRECISION, device)
    if not world.is_main:
        return _finetune(cfg, clip, device, run_dir, seeded, autocast, world)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", cfg.dump())
    with log_file(run_dir / "train.log"):
        return _finetune(cfg, clip, device, run_dir, seeded, autocast, world)


def _finetune(
    cfg: CfgNode, clip: Clip, device: torch.device, run_dir: Path, seeded: bool, autocast, world: World
) -> FinetuneResult:
    train = cfg.TRAIN
    total_steps = int(train.TOTAL_STEPS)
    log.info(
        "finetuning %s on keyframes %s -> %s%s", clip.path, clip.keyframe_indices, run_dir,
        f" ({world.size} ranks)" if world.distributed else "",
    )  # fmt: skip

    model = STM()
    if train.LOAD_CKPT:
        load_checkpoint(model, train.LOAD_CKPT)
    else:
        trainable_random_init(model)
        log.warning(
            "TRAIN.LOAD_CKPT is empty: the network starts from RANDOM weights (initialised so that finetuning can "
            "learn, see model/weights.py). Set TRAIN.LOAD_CKPT to trimap_ep150.pth for real footage."
        )
    memory_format = torch.channels_last if train.CHANNELS_LAST else torch.contiguous_format
    model.to(device, memory_format=memory_format).eval()  # batch norm frozen: eval mode throughout
    params = select_parameters(model, train.FREEZE_BACKBONE)
    optimizer = make_optimizer(train.OPTIMIZER, params, train.BASE_LR, train.WEIGHT_DECAY)
    start_step = load_optimizer_state(optimizer, train.LOAD_OPT) if train.LOAD_OPT else 0
    if train.LOAD_OPT:
        log.info("resuming from %s at step %d", train.LOAD_OPT, start_step)
    log.info(
        "%d trainable tensors (%.1fM values); batch norm frozen; %s lr %g (%s), %d steps",
        len(params), sum(p.numel() for p in params) / 1e6, train.OPTIMIZER, train.BASE_LR, train.LR_STRATEGY,
        total_steps,
    )  # fmt: skip
    class_weights = torch.tensor([1.0, train.UNKNOWN_WEIGHT, 1.0], device=device)
    step_module: nn.Module = TrainingStep(model, class_weights, memory_format, autocast)
    if world.distributed:
        step_module = DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )

    batch = int(train.BATCH_SIZE_PER_GPU)
    seed = cfg.SYSTEM.RANDOM_SEED + RANK_SEED_STRIDE * world.rank if seeded else None
    dataset = KeyframeClips(
        clip,
        tuple(train.TRAIN_INPUT_SIZE),
        dilation=cfg.FINETUNE.DILATION,
        min_unknown=cfg.FINETUNE.MIN_UNKNOWN_PIXELS,
        length=total_steps * batch,
        seed=seed,
    )
    loader = DataLoader(
        torch.utils.data.Subset(dataset, range(start_step * batch, total_steps * batch)),
        batch_size=batch,
        shuffle=False,
        num_workers=cfg.SYSTEM.NUM_WORKERS,
    )
    save_freq = cfg.FINETUNE.SAVE_FREQ
    checkpoint = None
    loss_value = float("nan")
    start = time.perf_counter()
    step = start_step
    with progress(total=total_steps, initial=start_step, desc="finetune", unit="step") as bar:
        for sample in loader:
            lr = learning_rate(step, train.BASE_LR, train.LR_STRATEGY, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            frames, labels = sample["frames"].to(device), sample["labels"].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss, predictions = step_module(frames, labels)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = mean_over_ranks(loss.detach(), world)
            if not math.isfinite(loss_value):
                raise RuntimeError(f"loss became {loss_value} at step {step}; lower TRAIN.BASE_LR")
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}")
            bar.update(1)
            if not world.is_main:
                continue
            if step % train.PRINT_FREQ == 0 or step == total_steps:
                log.info("step %d/%d loss %.4f lr %.3e", step, total_steps, loss_value, lr)
            if train.IMAGE_FREQ > 0 and (step % train.IMAGE_FREQ == 0 or step == start_step + 1):
                images = run_dir / "training_images"
                images.mkdir(exist_ok=True)
                sheet = training_sheet(frames[-1], labels[-1], predictions)
                atomic_write_png(images / f"step_{step:06d}.png", sheet)
            if (save_freq > 0 and step % save_freq == 0) or step == total_steps:
                checkpoint = save_state(model, optimizer, run_dir, step)
    if world.is_main and checkpoint is None:  # resumed at or past TOTAL_STEPS: nothing to train
        log.warning("TRAIN.LOAD_OPT is at step %d >= TRAIN.TOTAL_STEPS %d: nothing to train", start_step, total_steps)
        checkpoint = save_state(model, optimizer, run_dir, start_step)
    barrier(world)  # the checkpoint exists for every rank once this returns
    trained = step - start_step
    per_step = (time.perf_counter() - start) / max(trained, 1)
    log.info("%d steps, %.2f s/step, final loss %.4f", trained, per_step, loss_value)
    final = checkpoint or run_dir / f"checkpoint_{max(step, start_step)}.pth.tar"
    return FinetuneResult(run_dir, final, step, loss_value, per_step)


def mean_over_ranks(value: torch.Tensor, world: World) -> float:
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.size
    return float(value)


def save_state(model: STM, optimizer: torch.optim.Optimizer, run_dir: Path, step: int) -> Path:
    """``checkpoint_<n>.pth.tar`` (the STM state dict) and ``optimizer_<n>.pth.tar`` (for LOAD_OPT)."""
    checkpoint = run_dir / f"checkpoint_{step}.pth.tar"
    save_checkpoint(model, checkpoint)
    atomic_torch_save({"optimizer": optimizer.state_dict(), "step": step}, run_dir / f"optimizer_{step}.pth.tar")
    log.info("saved %s", checkpoint)
    return checkpoint
