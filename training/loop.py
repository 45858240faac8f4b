"""Online finetuning on a clip's keyframes (docs/method.md, "Online finetuning"):
``online_finetune_test.py`` as a library."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from yacs.config import CfgNode

from dataset.clip import Clip
from dataset.finetune import KeyframeClips
from model.checkpoint import load_checkpoint, save_checkpoint
from model.stm import STM
from model.weights import trainable_random_init
from training.images import training_sheet
from training.layout import RunFolder
from training.optim import learning_rate, load_optimizer_state, make_optimizer, select_parameters
from training.step import TrainingStep
from utils.distributed import SINGLE, World, agree_on_success, barrier
from utils.errors import UserError
from utils.io import FolderLock, atomic_torch_save, atomic_write_png, atomic_write_text, refuse_inside
from utils.logs import log_file, progress
from utils.precision import PRECISIONS, autocast_for

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # each rank of a seeded run draws its own augmentations


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


def finetune(cfg: CfgNode, cfg_path: Path, clip: Clip, device: torch.device, world: World = SINGLE) -> FinetuneResult:
    """Finetune the STM on ``clip``'s keyframes as ``cfg`` says; returns where things went.

    Under torchrun (``world``) every rank trains on its own augmentations with
    DistributedDataParallel; rank 0 writes the log, images and checkpoints.
    """
    _check_train_config(cfg)
    seeded = cfg.SYSTEM.RANDOM_SEED > 0
    if seeded:
        seed_everything(cfg.SYSTEM.RANDOM_SEED)  # the same start on every rank
    run_dir = RunFolder.of(cfg, cfg_path)
    refuse_inside(run_dir.path, "SYSTEM.OUTDIR's run folder", clip.path, "the clip folder")
    with contextlib.ExitStack() as held:
        error = None
        if world.is_main:  # rank 0 writes the run folder: it holds its lock; every rank hears if it cannot
            try:
                what = "finetuning (SYSTEM.OUTDIR / SYSTEM.EXP_SUFFIX)"
                held.enter_context(FolderLock(run_dir.path, what, named_here=True))
                atomic_write_text(run_dir.config_yaml, cfg.dump(), durable=True)
                held.enter_context(log_file(run_dir.train_log))
            except Exception as exc:
                error = exc
        agree_on_success(world, error)
        return _finetune(cfg, clip, device, run_dir, seeded, world)


def _check_train_config(cfg: CfgNode) -> None:
    train = cfg.TRAIN
    if int(train.TOTAL_STEPS) < 1:
        raise UserError(f"TRAIN.TOTAL_STEPS {train.TOTAL_STEPS}: must be >= 1")
    if train.BATCH_SIZE_PER_GPU < 1:
        raise UserError(f"TRAIN.BATCH_SIZE_PER_GPU {train.BATCH_SIZE_PER_GPU}: must be >= 1")
    learning_rate(0, train.BASE_LR, train.LR_STRATEGY, int(train.TOTAL_STEPS))  # validates the strategy
    if train.PRECISION not in PRECISIONS:
        raise UserError(f"TRAIN.PRECISION {train.PRECISION!r} is not one of {', '.join(PRECISIONS)}")


def _finetune(
    cfg: CfgNode, clip: Clip, device: torch.device, run_dir: RunFolder, seeded: bool, world: World
) -> FinetuneResult:
    train = cfg.TRAIN
    log.info(
        "finetuning %s on keyframes %s -> %s%s", clip.path, clip.keyframe_indices, run_dir,
        f" ({world.size} ranks)" if world.distributed else "",
    )  # fmt: skip
    model, params, optimizer, step_module = _training_parts(train, device, world)
    start_step = load_optimizer_state(optimizer, train.LOAD_OPT) if train.LOAD_OPT else 0
    if train.LOAD_OPT:
        log.info("resuming from %s at step %d", train.LOAD_OPT, start_step)
    log.info(
        "%d trainable tensors (%.1fM values); batch norm frozen; %s lr %g (%s), %d steps",
        len(params), sum(p.numel() for p in params) / 1e6, train.OPTIMIZER, train.BASE_LR, train.LR_STRATEGY,
        train.TOTAL_STEPS,
    )  # fmt: skip
    seed = cfg.SYSTEM.RANDOM_SEED + RANK_SEED_STRIDE * world.rank if seeded else None
    loader = _sample_loader(cfg, clip, start_step, seed)
    run = _TrainingRun(cfg, model, optimizer, run_dir, world, start_step)
    start = time.perf_counter()
    run.train(step_module, loader, device)
    trained = run.step - start_step
    per_step = (time.perf_counter() - start) / max(trained, 1)
    log.info("%d steps, %.2f s/step, final loss %.4f", trained, per_step, run.loss)
    return FinetuneResult(run_dir.path, run.checkpoint, run.step, run.loss, per_step)


@dataclass(frozen=True)
class StepTiming:
    seconds_per_step: float
    save_seconds: float  # one checkpoint and optimizer state written (durably), as the loop saves them
    saves: int  # how many the loop writes (every FINETUNE.SAVE_FREQ steps and at the end)
    save_bytes: int = 0  # one save on disk: the checkpoint and the optimizer state


def time_training_steps(cfg: CfgNode, clip: Clip, device: torch.device, steps: int = 2) -> StepTiming:
    """Seconds per finetuning step with ``cfg`` on ``device``: the loop's own model, optimizer, step and
    samples, one untimed warm-up step, then the median of ``steps`` timed ones (drawing the samples not
    included: a run's loader workers draw them ahead); and one save of the state, into a temporary folder
    that is removed."""
    _check_train_config(cfg)
    train = cfg.TRAIN
    model, _, optimizer, step_module = _training_parts(train, device, SINGLE)
    batch = int(train.BATCH_SIZE_PER_GPU)
    samples = KeyframeClips(clip, tuple(train.TRAIN_INPUT_SIZE), min_unknown=cfg.FINETUNE.MIN_UNKNOWN_PIXELS,
                            length=(steps + 1) * batch, seed=1)  # fmt: skip
    seconds = []
    for sample in DataLoader(samples, batch_size=batch, shuffle=False, num_workers=0):
        frames, labels = sample["frames"].to(device), sample["labels"].to(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = step_module(frames, labels)
        loss.backward()
        optimizer.step()
        loss.item()  # waits for the device
        seconds.append(time.perf_counter() - start)
    timed = sorted(seconds[1:] or seconds)
    with tempfile.TemporaryDirectory(prefix="tgm-save-timing-") as folder:
        start = time.perf_counter()
        save_state(model, optimizer, RunFolder(folder), 0)
        save_seconds = time.perf_counter() - start
        save_bytes = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
    total, every = int(train.TOTAL_STEPS), int(cfg.FINETUNE.SAVE_FREQ)
    saves = len({*range(every, total + 1, every), total}) if every > 0 else 1
    return StepTiming(timed[len(timed) // 2], save_seconds, saves, save_bytes)


def _training_parts(
    train: CfgNode, device: torch.device, world: World
) -> tuple[STM, list[nn.Parameter], torch.optim.Optimizer, nn.Module]:
    """The starting model, the parameters it trains, their optimizer and the training step module."""
    model = _starting_model(train, device)
    params = select_parameters(model, train.FREEZE_BACKBONE)
    optimizer = make_optimizer(train.OPTIMIZER, params, train.BASE_LR, train.WEIGHT_DECAY)
    return model, params, optimizer, _step_module(model, train, device, world)


RANDOM_START_MIN_LR = 1e-5  # below this a finetuning from random weights does not learn (docs/finetuning.md)


def _starting_model(train: CfgNode, device: torch.device) -> STM:
    """TRAIN.LOAD_CKPT, or a random start that can learn (said loudly), in eval mode on ``device``."""
    model = STM()
    if train.LOAD_CKPT:
        load_checkpoint(model, train.LOAD_CKPT)
    else:
        trainable_random_init(model)
        log.warning(
            "TRAIN.LOAD_CKPT is empty: the network starts from RANDOM weights (initialised so that finetuning can "
            "learn, see model/weights.py): it learns the subject from the keyframes alone, so expect rough trimaps "
            "away from them. Set TRAIN.LOAD_CKPT to trimap_ep150.pth for real footage."
        )
        if float(train.BASE_LR) < RANDOM_START_MIN_LR:
            log.warning(
                "TRAIN.BASE_LR %g is meant for the released weights: from random weights it learns nothing. Use about "
                "TRAIN.BASE_LR 1e-4 TRAIN.LR_STRATEGY poly (docs/finetuning.md)", float(train.BASE_LR),
            )  # fmt: skip
    memory_format = torch.channels_last if train.CHANNELS_LAST else torch.contiguous_format
    return model.to(device, memory_format=memory_format).eval()  # batch norm frozen: eval mode throughout


def _step_module(model: STM, train: CfgNode, device: torch.device, world: World) -> nn.Module:
    """The training step as a module; wrapped in DistributedDataParallel under torchrun."""
    class_weights = torch.tensor([1.0, train.UNKNOWN_WEIGHT, 1.0], device=device)
    memory_format = torch.channels_last if train.CHANNELS_LAST else torch.contiguous_format
    step_module: nn.Module = TrainingStep(model, class_weights, memory_format, autocast_for(train.PRECISION, device))
    if world.distributed:
        step_module = DistributedDataParallel(
            step_module, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )
    return step_module


def _sample_loader(cfg: CfgNode, clip: Clip, start_step: int, seed: int | None) -> DataLoader:
    """Training clips for the steps from ``start_step`` on (sample i always comes from (seed, i))."""
    batch, total_steps = int(cfg.TRAIN.BATCH_SIZE_PER_GPU), int(cfg.TRAIN.TOTAL_STEPS)
    dataset = KeyframeClips(
        clip,
        tuple(cfg.TRAIN.TRAIN_INPUT_SIZE),
        min_unknown=cfg.FINETUNE.MIN_UNKNOWN_PIXELS,
        length=total_steps * batch,
        seed=seed,
    )
    return DataLoader(
        Subset(dataset, range(start_step * batch, total_steps * batch)),
        batch_size=batch,
        shuffle=False,
        num_workers=loader_workers(int(cfg.SYSTEM.NUM_WORKERS)),
    )


def loader_workers(asked: int) -> int:
    """SYSTEM.NUM_WORKERS, at most the cores this process may use (more only compete with the training
    step for them, and torch warns that they might freeze); the samples do not depend on it."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if asked > cores:
        log.info("SYSTEM.NUM_WORKERS %d: %d loader workers, one per core this process may use", asked, cores)
    return min(asked, cores)


class _TrainingRun:
    """The loop's state: the step, the last loss and checkpoint; what rank 0 writes after a step."""

    def __init__(
        self,
        cfg: CfgNode,
        model: STM,
        optimizer: torch.optim.Optimizer,
        run_dir: RunFolder,
        world: World,
        start_step: int,
    ) -> None:
        self.train_cfg = cfg.TRAIN
        self.save_freq = cfg.FINETUNE.SAVE_FREQ
        self.total_steps = int(cfg.TRAIN.TOTAL_STEPS)
        self.model, self.optimizer, self.run_dir, self.world = model, optimizer, run_dir, world
        self.start_step = self.step = start_step
        self.loss = float("nan")
        self.checkpoint: Path | None = None

    def train(self, step_module: nn.Module, loader: DataLoader, device: torch.device) -> None:
        train = self.train_cfg
        with progress(total=self.total_steps, initial=self.start_step, desc="finetune", unit="step") as bar:
            for sample in loader:
                lr = learning_rate(self.step, train.BASE_LR, train.LR_STRATEGY, self.total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                frames, labels = sample["frames"].to(device), sample["labels"].to(device)
                self.optimizer.zero_grad(set_to_none=True)
                loss, predictions = step_module(frames, labels)
                loss.backward()
                self.optimizer.step()
                self.step += 1
                self.loss = mean_over_ranks(loss.detach(), self.world)
                if not math.isfinite(self.loss):
                    raise RuntimeError(f"loss became {self.loss} at step {self.step}; lower TRAIN.BASE_LR")
                bar.set_postfix(loss=f"{self.loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if self.world.is_main:
                    self._after_step(lr, frames, labels, predictions)
        if self.world.is_main and self.checkpoint is None:  # resumed at or past TOTAL_STEPS: nothing to train
            log.warning(
                "TRAIN.LOAD_OPT is at step %d >= TRAIN.TOTAL_STEPS %d: nothing to train", self.start_step,
                self.total_steps,
            )  # fmt: skip
            self.checkpoint = save_state(self.model, self.optimizer, self.run_dir, self.start_step)
        barrier(self.world)  # the checkpoint exists for every rank once this returns
        if self.checkpoint is None:
            self.checkpoint = self.run_dir.checkpoint(max(self.step, self.start_step))

    def _after_step(self, lr: float, frames: torch.Tensor, labels: torch.Tensor, predictions) -> None:
        """Rank 0: the log line, the training image and the checkpoint due at this step."""
        train, step = self.train_cfg, self.step
        if step % train.PRINT_FREQ == 0 or step == self.total_steps:
            log.info("step %d/%d loss %.4f lr %.3e", step, self.total_steps, self.loss, lr)
        if train.IMAGE_FREQ > 0 and (step % train.IMAGE_FREQ == 0 or step == self.start_step + 1):
            images = self.run_dir.images_dir
            images.mkdir(exist_ok=True)
            atomic_write_png(images / f"step_{step:06d}.png", training_sheet(frames[-1], labels[-1], predictions))
        if (self.save_freq > 0 and step % self.save_freq == 0) or step == self.total_steps:
            self.checkpoint = save_state(self.model, self.optimizer, self.run_dir, step)


def mean_over_ranks(value: torch.Tensor, world: World) -> float:
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= world.size
    return float(value)


def save_state(model: STM, optimizer: torch.optim.Optimizer, run_dir: RunFolder, step: int) -> Path:
    """``checkpoint_<n>.pth.tar`` (the STM state dict) and ``optimizer_<n>.pth.tar`` (for LOAD_OPT)."""
    checkpoint = run_dir.checkpoint(step)
    save_checkpoint(model, checkpoint)
    atomic_torch_save({"optimizer": optimizer.state_dict(), "step": step}, run_dir.optimizer(step))
    log.info("saved %s", checkpoint)
    return checkpoint
