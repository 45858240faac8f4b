"""Propagating keyframe trimaps through a clip, part by part (docs/method.md, "The parts plan")."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dataset.clip import Clip
from dataset.prepare import frame_to_tensor, pad_reflect, resize_frame, resize_labels
from dataset.trimap import labels_to_onehot
from inference.memory_bank import MemoryBank, Slot
from inference.plan import Part
from model.stm import STM, MemoryEntry, MemoryStack, QueryFeatures

log = logging.getLogger(__name__)


class FrameSource:
    """Network inputs of a clip's frames (1 x 3 x Hp x Wp, reflect-padded to a multiple of 32),
    at ``size`` (h, w; None: the frames' own size: see inference.options.working_size).

    Frames are read and prepared on ``workers`` background threads ahead of use
    (:meth:`prefetch`); a few recent ones are cached, since each frame is used twice in a row
    (as query, then as memory).
    """

    def __init__(
        self,
        clip: Clip,
        device: torch.device,
        workers: int = 1,
        cache_size: int = 6,
        memory_format: torch.memory_format = torch.contiguous_format,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.clip = clip
        self.size = size
        self.device = device
        self.memory_format = memory_format
        self.cache_size = cache_size
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="frames") if workers > 0 else None
        self._futures: OrderedDict[int, Future | torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self, index: int) -> torch.Tensor:
        rgb = self.clip.read_frame(index)
        tensor = pad_reflect(frame_to_tensor(rgb if self.size is None else resize_frame(rgb, self.size)))
        # page-locked on the reading thread, so that the copy to a GPU runs without the host waiting
        return tensor.pin_memory() if self.device.type == "cuda" else tensor

    def prefetch(self, indices: list[int]) -> None:
        """Start loading these frames (no-op without workers or when already loaded)."""
        if self._pool is None:
            return
        with self._lock:
            for index in indices:
                if index not in self._futures:
                    self._futures[index] = self._pool.submit(self._load, index)
            self._trim()

    def _trim(self) -> None:
        while len(self._futures) > self.cache_size + 4:
            self._futures.popitem(last=False)

    def get(self, index: int) -> torch.Tensor:
        """The frame on the device, in the memory format asked for (cached there for reuse)."""
        with self._lock:
            item = self._futures.get(index)
        if item is None:
            item = self._load(index)
        elif isinstance(item, Future):
            item = item.result()
        item = item.to(self.device, memory_format=self.memory_format, non_blocking=True)
        with self._lock:
            self._futures[index] = item
            self._futures.move_to_end(index)
            self._trim()
        return item

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class QueryCache:
    """The query features of frames that a later part of this run segments again, up to a budget.

    Between two keyframes every frame is segmented twice, by the forward part and by the backward
    one, and the query encoder, its key/value head and (with ``--fast``) the decoder's skip
    branches see only the frame: the second visit reuses what the first computed, the same
    tensors, so the results do not change by a bit. A frame is kept only while a visit to it is
    still to come (``expect``), and only while the cache holds less than ``budget_bytes``; frames
    beyond the budget are computed again. ``peak_bytes``: the most it held.
    """

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._visits: Counter[int] = Counter()
        self._kept: dict[int, QueryFeatures] = {}
        self.held_bytes = self.peak_bytes = 0
        self.hits = self.misses = 0

    def expect(self, parts: list[Part]) -> None:
        """The parts this run will compute, in order: which frames they segment, and how often."""
        for part in parts:
            self._visits.update(part.frames[1:])

    def holds(self, frame: int) -> bool:
        return frame in self._kept

    def take(self, frame: int) -> QueryFeatures | None:
        """A visit to ``frame``: its kept features (then dropped) or None."""
        self._visits[frame] -= 1
        features = self._kept.pop(frame, None)
        if features is None:
            self.misses += 1
        else:
            self.hits += 1
            self.held_bytes -= features.nbytes
        return features

    def offer(self, frame: int, features: QueryFeatures) -> None:
        """Keep ``frame``'s features if another visit is to come and the budget has room."""
        if self._visits[frame] > 0 and self.held_bytes + features.nbytes <= self.budget_bytes:
            self._kept[frame] = features
            self.held_bytes += features.nbytes
            self.peak_bytes = max(self.peak_bytes, self.held_bytes)


def keyframe_probs(labels: np.ndarray, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A keyframe's labels (H x W) -> one-hot 1 x 3 x Hp x Wp at ``size`` (h, w; None: its own;
    thin bands kept, see dataset.prepare.resize_labels), reflect-padded like its frame."""
    if size is not None:
        labels = resize_labels(labels, size)
    return pad_reflect(torch.from_numpy(labels_to_onehot(labels)).unsqueeze(0))


@dataclass
class PartStep:
    """One frame's result: the part's local index i, the frame index and 1 x 3 x Hp x Wp probs."""

    local_index: int
    frame: int
    probs: torch.Tensor


class Propagator:
    """Runs parts of one clip with one model; keyframe memories are encoded once per run.

    Args:
        model: the STM, in eval mode, on ``frames.device``.
        frames: where frames come from.
        keyframes: keyframe index -> one-hot probabilities (1 x 3 x Hp x Wp) on any device.
        keep_every, max_memory: the memory schedule (see MemoryBank).
        autocast: a context factory for the precision (see utils.precision.autocast_for).
        cache_keyframes: encode each keyframe once per run (False: once per part, as published).
        query_cache: share the query frames' features between the parts of a run (None: off).
        query_batch: encode the query features of up to this many upcoming frames of a part in one
            batch (they do not depend on the memory); 1: one frame at a time.
    """

    def __init__(
        self,
        model: STM,
        frames: FrameSource,
        keyframes: dict[int, torch.Tensor],
        keep_every: int,
        max_memory: int | None,
        autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
        cache_keyframes: bool = True,
        query_cache: QueryCache | None = None,
        query_batch: int = 1,
    ) -> None:
        self.model = model
        self.frames = frames
        self.keyframes = {k: v.to(frames.device) for k, v in keyframes.items()}
        self.keep_every = keep_every
        self.max_memory = max_memory
        self.autocast = autocast
        self.cache_keyframes = cache_keyframes
        self._fixed: dict[int, MemoryEntry] = {}
        self.query_cache = query_cache
        self.query_batch = max(1, query_batch)
        self._ahead: dict[int, QueryFeatures] = {}  # encoded with an earlier frame of this part's batch

    def _memorize(self, index: int, probs: torch.Tensor) -> MemoryEntry:
        with self.autocast():
            return self.model.memorize(self.frames.get(index), probs)

    def fixed_entry(self, index: int) -> MemoryEntry:
        if not self.cache_keyframes:
            return self._memorize(index, self.keyframes[index])
        if index not in self._fixed:
            self._fixed[index] = self._memorize(index, self.keyframes[index])
        return self._fixed[index]

    @torch.inference_mode()
    def run_part(self, part: Part) -> Iterator[PartStep]:
        """Yield the part's frames in visiting order with their probabilities."""
        self.frames.prefetch(list(part.frames[:3]) + list(part.fixed))
        # The bounded read's memory laid out for the fused read (no copy per read); the naive path
        # keeps the published layout.
        stack = None
        if self.model.memory_read == "bounded":  # fp32, or the entries' own dtype where the read follows autocast
            dtype = None if self.model.read_follows_autocast else torch.float32
            stack = MemoryStack(len(part.fixed) + (self.max_memory or 8), dtype)
        stored = stack.add if stack is not None else (lambda entry: entry)
        bank: MemoryBank[MemoryEntry] = MemoryBank(
            [Slot(k, stored(self.fixed_entry(k))) for k in part.fixed], self.keep_every, self.max_memory
        )
        previous = self.keyframes[part.start]
        self._ahead.clear()
        yield PartStep(0, part.start, previous)
        for i in range(1, len(part)):
            frame_index = part.frames[i]
            self.frames.prefetch(list(part.frames[i : i + 2 + self.query_batch]))
            if i >= 2:
                if stack is not None and bank.temporary is not None:
                    stack.release(bank.temporary.entry)  # replaced, not kept
                entry = stored(self._memorize(part.frames[i - 1], previous))
                bank.set_temporary(Slot(part.frames[i - 1], entry))
            query = self._query(frame_index, part.frames[i + 1 : i + 2 * self.query_batch])
            with self.autocast():
                logits = self.model.segment(None, [slot.entry for slot in bank.slots()], query=query)
            probs = F.softmax(logits.float(), dim=1)
            dropped = bank.after_segment(i)
            if stack is not None and dropped is not None:
                stack.release(dropped.entry)
            yield PartStep(i, frame_index, probs)
            previous = probs

    def _query(self, frame_index: int, following: tuple[int, ...] = ()) -> QueryFeatures:
        """The query features of a frame: shared from an earlier part's visit, encoded with an
        earlier frame's batch, or computed, together with those of the next ``query_batch - 1``
        ``following`` frames of the part that have none yet. Batches are ``query_batch`` frames or
        one, never a size in between: each new batch size makes cuDNN search its convolution
        algorithms again (seconds at 1080p), so a part's last few frames go one at a time."""
        query = self.query_cache.take(frame_index) if self.query_cache is not None else None
        if query is not None:
            return query
        query = self._ahead.pop(frame_index, None)
        if query is None:
            cache = self.query_cache
            pending = [f for f in following if f not in self._ahead and (cache is None or not cache.holds(f))]
            batch = [frame_index, *pending[: self.query_batch - 1]]
            if len(batch) < self.query_batch:
                batch = [frame_index]
            with self.autocast():
                if len(batch) == 1:
                    query = self.model.encode_query(self.frames.get(frame_index))
                else:
                    frames = torch.cat([self.frames.get(f) for f in batch])
                    query, *rest = self.model.encode_query(frames).split()
                    self._ahead.update(zip(batch[1:], rest))
        if self.query_cache is not None:
            self.query_cache.offer(frame_index, query)
        return query


def probs_to_image(
    probs: torch.Tensor, height: int, width: int, frame_size: tuple[int, int] | None = None
) -> np.ndarray:
    """1 x 3 x Hp x Wp probabilities -> H x W x 3 float32 numpy, cropped to the ``height`` x ``width``
    they were computed at, then (``frame_size``, h w, when it differs) scaled bilinearly to the frame's size."""
    return HostProbs.of(probs, height, width, frame_size).numpy()


def pinned_empty(shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised page-locked host tensor (torch caches these allocations)."""
    return torch.empty(shape, dtype=dtype, pin_memory=True)


class HostProbs:
    """A step's probabilities on their way to the host: cropped and scaled where they were computed
    (as :func:`probs_to_image` says), then copied without making the host wait: on a GPU into
    page-locked memory behind a CUDA event, so the next step is queued while the copy runs and a
    writer thread waits for it (:meth:`numpy`); elsewhere the tensor itself."""

    def __init__(self, tensor: torch.Tensor, event: torch.cuda.Event | None = None) -> None:
        self._tensor, self._event = tensor, event

    @classmethod
    def of(cls, probs: torch.Tensor, height: int, width: int, frame_size: tuple[int, int] | None = None) -> HostProbs:
        probs = probs[:, :, :height, :width].float()
        if frame_size is not None and frame_size != (height, width):
            probs = F.interpolate(probs, size=frame_size, mode="bilinear", align_corners=False)
        if probs.device.type != "cuda":
            return cls(probs.cpu())
        return cls.behind_event(probs)

    @classmethod
    def behind_event(cls, probs: torch.Tensor) -> HostProbs:
        """A CUDA tensor copied into page-locked memory without waiting, and the event that says
        the copy is done: blocking, so a writer thread waiting for it sleeps instead of spinning a
        core."""
        host = pinned_empty(probs.shape, probs.dtype)
        host.copy_(probs, non_blocking=True)
        event = torch.cuda.Event(blocking=True)
        event.record(torch.cuda.current_stream(probs.device))
        return cls(host, event)

    def numpy(self) -> np.ndarray:
        """H x W x 3 float32 (waits for the copy)."""
        if self._event is not None:
            self._event.synchronize()
        return self._tensor[0].permute(1, 2, 0).numpy()
