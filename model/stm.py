"""Space-time memory network (STM) for 3-class trimaps, as used by TCVOM's trimap generation.

Module attribute names (``Encoder_M``, ``KV_M_r4``, ``Decoder.RF3.convFS`` ...) are the names of
the published checkpoints and must not change: ``state_dict()`` matches
``tests/fixtures/state_dict_keys.json`` exactly.

Strides: f16 (res4 / r4, 1024 ch), f8 (res3 / r3, 512 ch), f4 (res2 / r2, 256 ch).
Trimap classes: 0 background, 1 unknown, 2 foreground. Unknown and foreground are the two
"objects" the network segments; background is derived by soft aggregation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from model.resnet import ResNet50Trunk

NUM_CLASSES = 3
OBJECTS = (1, 2)  # unknown, foreground: consecutive classes (memorize takes them as a slice)
KEY_DIM = 128
VALUE_DIM = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NETWORK_STRIDE = 16


@dataclass
class MemoryEntry:
    """Keys and values of one memorised frame, one row per object.

    keys: O x 128 x h x w, values: O x 512 x h x w (h, w at stride 16 of the padded frame).
    stack, slot: set when the entry lives in a :class:`MemoryStack` (its tensors are then views of
    the stack's slot ``slot``).
    """

    keys: torch.Tensor
    values: torch.Tensor
    stack: MemoryStack | None = field(default=None, repr=False, compare=False)
    slot: int = -1


class MemoryStack:
    """A part's memory entries laid out as the fused read takes them, so a read copies nothing.

    Two buffers, keys O x (capacity * h*w) x Ck and values O x (capacity * h*w) x Cv, in ``dtype``; each
    entry occupies one slot (h*w rows) and its tensors are views of that slot. Used slots are kept
    at the front (a released slot is filled by moving the last entry into it: attention does not
    depend on the order of the memory's positions), so the fused read takes a prefix of both
    buffers. Capacity doubles when full (one copy); with ``--max_memory`` it is reached once and
    the read's memory stays flat however long the part. ``dtype``: what the buffers hold, the
    dtype the read runs in: fp32 (entries made under autocast are converted once, here), or None
    for the entries' own, so bf16 or fp16 under autocast where the read follows autocast
    (``STM.read_follows_autocast``, on CUDA).
    """

    def __init__(self, capacity: int = 8, dtype: torch.dtype | None = torch.float32) -> None:
        self.capacity = max(1, capacity)
        self.dtype = dtype  # None: the first entry's
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.entries: list[MemoryEntry] = []  # slot j holds entries[j]
        self.positions = 0  # h * w of one entry

    def add(self, entry: MemoryEntry) -> MemoryEntry:
        """A copy of ``entry`` in the next free slot."""
        objects, key_dim, height, width = entry.keys.shape
        if self.keys is None:
            self.shape, self.positions = (objects, key_dim, entry.values.shape[1], height, width), height * width
            self.dtype = self.dtype or entry.keys.dtype
            self._allocate(self.capacity, entry.keys.device)
        elif len(self.entries) == self.capacity:
            self._allocate(2 * self.capacity, entry.keys.device)
        stored = MemoryEntry(entry.keys, entry.values, self, len(self.entries))
        self.entries.append(stored)
        self._write(stored, entry.keys, entry.values)
        return stored

    def release(self, entry: MemoryEntry) -> None:
        """Free ``entry``'s slot: the last entry moves into it."""
        if entry.stack is not self:
            return
        last = self.entries.pop()
        if last is not entry:
            last.slot = entry.slot
            self.entries[entry.slot] = last
            self._write(last, last.keys, last.values)  # from its old slot's views into the freed slot
        entry.stack, entry.slot = None, -1

    def prefix(self, memory: Sequence[MemoryEntry]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(keys O x T*h*w x Ck, values O x T*h*w x Cv) without a copy when ``memory`` is exactly
        the entries of this stack's first T slots (in any order); else None."""
        count = len(memory)
        if self.keys is None or count != len(self.entries) or sorted(e.slot for e in memory) != list(range(count)):
            return None
        if any(e.stack is not self for e in memory):
            return None
        rows = count * self.positions
        return self.keys[:, :rows], self.values[:, :rows]

    def _allocate(self, capacity: int, device: torch.device) -> None:
        objects, key_dim, value_dim, _, _ = self.shape
        keys = torch.empty(objects, capacity * self.positions, key_dim, device=device, dtype=self.dtype)
        values = torch.empty(objects, capacity * self.positions, value_dim, device=device, dtype=self.dtype)
        if self.keys is not None:
            used = len(self.entries) * self.positions
            keys[:, :used] = self.keys[:, :used]
            values[:, :used] = self.values[:, :used]
        self.keys, self.values, self.capacity = keys, values, capacity
        for entry in self.entries:  # views of the new buffers
            entry.keys, entry.values = self._views(entry.slot)

    def _views(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        _, _, _, height, width = self.shape
        rows = slice(slot * self.positions, (slot + 1) * self.positions)
        return (self.keys[:, rows].transpose(1, 2).unflatten(2, (height, width)),
                self.values[:, rows].transpose(1, 2).unflatten(2, (height, width)))  # fmt: skip

    def _write(self, entry: MemoryEntry, keys: torch.Tensor, values: torch.Tensor) -> None:
        entry.keys, entry.values = self._views(entry.slot)
        entry.keys.copy_(keys)
        entry.values.copy_(values)


@dataclass
class QueryFeatures:
    """What ``segment`` computes from the query frame alone, whatever the memory: the same frame
    gives the same features in every part that visits it (``Propagator`` shares them).

    key: 1 x 128 x h x w, value: 1 x 512 x h x w (stride 16); skip3, skip2: the decoder's skip
    inputs: r3 (1 x 512, stride 8) and r2 (1 x 256, stride 4), or with ``share_skips`` the skip
    branches already applied to them; pads: the padding ``pad_to_multiple`` added.
    """

    key: torch.Tensor
    value: torch.Tensor
    skip3: torch.Tensor
    skip2: torch.Tensor
    pads: tuple[int, int, int, int]
    skips_done: bool

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.key, self.value, self.skip3, self.skip2))

    def split(self) -> list[QueryFeatures]:
        """The features of a batch of frames (``encode_query`` on B x 3 x H x W) as B single-frame
        ones, each in its own memory (a kept frame does not hold its whole batch)."""
        tensors = (self.key, self.value, self.skip3, self.skip2)
        return [
            QueryFeatures(*(t[j : j + 1].clone() for t in tensors), self.pads, self.skips_done)
            for j in range(self.key.shape[0])
        ]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two dims up to a multiple, centred (the extra pixel goes bottom/right).

    Returns the padded tensor and (left, right, top, bottom).
    """
    height, width = x.shape[-2:]
    pad_h = (-height) % multiple
    pad_w = (-width) % multiple
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h or pad_w:
        x = F.pad(x, pads)
    return x, pads


def crop_padding(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on the last two dims."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


class _TrunkEncoder(nn.Module):
    """A ResNet-50 trunk (stem, res2-res4) behind ImageNet normalisation with its own buffers.

    ``mask_inputs`` adds the 1-channel stem convolutions ``conv1_m`` and ``conv1_o`` (registered
    first, as in the published checkpoints' tensor order).
    """

    def __init__(self, mask_inputs: bool = False) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        if mask_inputs:
            self.conv1_m = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
            self.conv1_o = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        trunk = ResNet50Trunk()
        self.conv1 = trunk.conv1
        self.bn1 = trunk.bn1
        self.relu = trunk.relu
        self.maxpool = trunk.maxpool
        self.res2 = trunk.layer1
        self.res3 = trunk.layer2
        self.res4 = trunk.layer3

    def normalise(self, frame: torch.Tensor) -> torch.Tensor:
        return (frame - self.mean) / self.std

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 output -> f4, 64 channels."""
        return self.maxpool(self.relu(self.bn1(x)))


class MemoryEncoder(_TrunkEncoder):
    """ResNet-50 trunk whose first conv also sees the object mask and the other objects' mask."""

    def __init__(self) -> None:
        super().__init__(mask_inputs=True)

    def forward(self, frame: torch.Tensor, mask: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """frame: B x 3 x H x W, mask/others: B x 1 x H x W -> r4: B x 1024 x H/16 x W/16."""
        x = self.stem(self.conv1(self.normalise(frame)) + self.conv1_m(mask) + self.conv1_o(others))  # f4, 64
        return self.res4(self.res3(self.res2(x)))  # f16, 1024


class QueryEncoder(_TrunkEncoder):
    """ResNet-50 trunk returning the f16, f8 and f4 features."""

    def forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frame: B x 3 x H x W -> (r4: B x 1024 x f16, r3: B x 512 x f8, r2: B x 256 x f4)."""
        r2 = self.res2(self.stem(self.conv1(self.normalise(frame))))  # f4, 256
        r3 = self.res3(r2)  # f8, 512
        r4 = self.res4(r3)  # f16, 1024
        return r4, r3, r2


class KeyValue(nn.Module):
    """3x3 key (128) and value (512) projections of the f16 features."""

    def __init__(self, in_dim: int = 1024, key_dim: int = KEY_DIM, value_dim: int = VALUE_DIM) -> None:
        super().__init__()
        self.Key = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.Value = nn.Conv2d(in_dim, value_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.Key(x), self.Value(x)


class ResBlock(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (same width in and out)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Refine(nn.Module):
    """Merge a skip connection with the upsampled coarser decoder state.

    ``ResMM(ResFS(convFS(skip)) + up2(previous))``. The skip branch depends only on the query
    frame, so :meth:`skip_branch` can be computed once and shared by every object.
    """

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.convFS = nn.Conv2d(in_dim, dim, 3, padding=1)
        self.ResFS = ResBlock(dim)
        self.ResMM = ResBlock(dim)

    def skip_branch(self, skip: torch.Tensor) -> torch.Tensor:
        return self.ResFS(self.convFS(skip))

    def forward(self, skip: torch.Tensor, previous: torch.Tensor, skip_done: bool = False) -> torch.Tensor:
        s = skip if skip_done else self.skip_branch(skip)
        up = F.interpolate(previous, scale_factor=2, mode="bilinear", align_corners=False)
        return self.ResMM(s + up)


class Decoder(nn.Module):
    """Memory read (f16, 1024) + query skips (f8, f4) -> 2-channel logits at full resolution."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.convFM = nn.Conv2d(1024, dim, 3, padding=1)
        self.ResMM = ResBlock(dim)
        self.RF3 = Refine(512, dim)
        self.RF2 = Refine(256, dim)
        self.pred2 = nn.Conv2d(dim, 2, 3, padding=1)

    def skip_branches(self, r3: torch.Tensor, r2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The object-independent part of the decoder: (RF3 skip: f8, RF2 skip: f4)."""
        return self.RF3.skip_branch(r3), self.RF2.skip_branch(r2)

    def forward(self, read: torch.Tensor, r3: torch.Tensor, r2: torch.Tensor, skips_done: bool = False) -> torch.Tensor:
        """read: O x 1024 x f16; r3, r2: O (or 1, broadcast) x C x f8/f4, or their skip branches
        when ``skips_done``. Returns O x 2 x H x W logits."""
        m4 = self.ResMM(self.convFM(read))  # f16, 256
        m3 = self.RF3(r3, m4, skips_done)  # f8, 256
        m2 = self.RF2(r2, m3, skips_done)  # f4, 256
        logits = self.pred2(F.relu(m2))  # f4, 2
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)


def stack_entries(memory: Sequence[MemoryEntry]) -> tuple[torch.Tensor, torch.Tensor]:
    """Memory entries -> (keys: O x 128 x T x h x w, values: O x 512 x T x h x w)."""
    keys = torch.stack([entry.keys for entry in memory], dim=2)
    values = torch.stack([entry.values for entry in memory], dim=2)
    return keys, values


def read_memory_naive(
    memory: Sequence[MemoryEntry], query_key: torch.Tensor, query_value: torch.Tensor
) -> torch.Tensor:
    """The published memory read: stacks the memory and materialises the (T*h*w) x (h*w)
    affinity per object. Runs in fp32 also under autocast: its scores, softmax and weighted sums
    (half-precision scores over thousands of memory positions lose the small differences the
    softmax has to tell apart; in fp32 runs nothing is cast or copied).

    memory: T entries (keys O x Ck x h x w, values O x Cv x h x w); query_key: O x Ck x h x w,
    query_value: O x Cv x h x w -> O x 2Cv x h x w (the read first, the query value second).
    """
    with torch.autocast(query_key.device.type, enabled=False):
        mem_keys, mem_values = (x.float() for x in stack_entries(memory))
        objects, key_dim, steps, height, width = mem_keys.shape
        value_dim = mem_values.shape[1]
        mk = mem_keys.reshape(objects, key_dim, steps * height * width).transpose(1, 2)  # O, THW, Ck
        qk = query_key.float().reshape(objects, key_dim, height * width)  # O, Ck, HW
        affinity = torch.bmm(mk, qk) / math.sqrt(key_dim)  # O, THW, HW
        affinity = F.softmax(affinity, dim=1)
        mv = mem_values.reshape(objects, value_dim, steps * height * width)  # O, Cv, THW
        read = torch.bmm(mv, affinity).view(objects, value_dim, height, width)
    return torch.cat([read.to(query_value.dtype), query_value], dim=1)


# Bytes of affinity the bounded read may materialise (the exact read); beyond them it takes the
# fused read, whose memory stays flat.
READ_BUDGET_BYTES = 64 * 2**20


def read_memory_bounded(
    memory: Sequence[MemoryEntry],
    query_key: torch.Tensor,
    query_value: torch.Tensor,
    budget_bytes: int = READ_BUDGET_BYTES,
    follow_autocast: bool = False,
    value_heads: int | None = None,
) -> torch.Tensor:
    """The memory read with bounded memory.

    When the whole affinity (O x T*h*w x h*w fp32) fits in ``budget_bytes`` this is the exact read,
    :func:`read_memory_naive` (the same operations, so the same rounding as the published code).
    Beyond that it is :func:`read_memory_fused`: torch's fused attention, which never holds the
    affinity, so its memory stays flat as T and the frame size grow; equal to the naive read up to
    float rounding. Both run in fp32 also under autocast, but with ``follow_autocast`` the fused
    read runs in the autocast dtype (``STM.read_follows_autocast``). ``value_heads``: see
    :func:`fused_value_heads`. Shapes as in :func:`read_memory_naive`.
    """
    objects, _, height, width = query_key.shape
    positions = height * width
    entry_positions = memory[0].keys.shape[-2] * memory[0].keys.shape[-1]
    if 4 * objects * len(memory) * entry_positions * positions <= budget_bytes:
        return read_memory_naive(memory, query_key, query_value)
    device_type = query_key.device.type
    dtype = torch.float32
    if follow_autocast and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
    return read_memory_fused(memory, query_key, query_value, value_heads, dtype)


READ_HEADS = (1, 4)  # the value heads the fused read can take: one of 512, or four of 128


def fused_value_heads(device: torch.device, key_dim: int = KEY_DIM, value_dim: int = VALUE_DIM) -> int:
    """How many heads the fused read splits the values into on ``device`` by default.

    The read's keys have 128 channels and its values 512. Four heads of 128 share the query and
    the keys (expanded, not copied): the scores are computed once per head, 1.6x the
    multiply-adds of one head, and memory stays flat. The CPU's flash kernel needs values as wide
    as the keys, or torch falls back to the math kernel, which materialises the whole affinity:
    there the values always go in as 4 heads. On CUDA one head of 512 leaves torch only the
    memory-efficient kernel (flash and cuDNN attention need equal head dims of at most 256); 4
    heads let them run too, at the cost of the repeated scores. Which is faster on a card is
    measured (``bench/bench_read.py --heads 1,4``); one head is the default until then, and
    ``--read_heads`` chooses.
    """
    return 1 if device.type == "cuda" else value_dim // key_dim


def read_memory_fused(
    memory: Sequence[MemoryEntry],
    query_key: torch.Tensor,
    query_value: torch.Tensor,
    value_heads: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The memory read as ``torch.nn.functional.scaled_dot_product_attention``: the query positions
    attend to the T*h*w memory positions with scale 1/sqrt(Ck), the softmax over the memory, as in
    :func:`read_memory_naive` (equal up to float rounding). The memory's keys and values are read
    as one O x T*h*w x C tensor each: where the entries are a :class:`MemoryStack`'s, its buffers
    as they lie; otherwise gathered (a copy the size of the memory). The affinity never exists.
    ``value_heads``: see :func:`fused_value_heads` (None: the device's default). ``dtype``: what
    the read computes in, with autocast off inside: fp32 by default; :func:`read_memory_bounded`
    passes the autocast dtype where the read follows autocast. Shapes as in
    :func:`read_memory_naive`; the read comes back in the query value's dtype.
    """
    objects, key_dim, height, width = query_key.shape
    value_dim = memory[0].values.shape[1]
    heads = fused_value_heads(query_key.device, key_dim, value_dim) if value_heads is None else value_heads
    if value_dim % heads or (heads > 1 and value_dim // heads != key_dim):
        raise ValueError(f"{value_dim} value channels do not split into {heads} heads of {key_dim}")
    with torch.autocast(query_key.device.type, enabled=False):
        stacked = memory[0].stack.prefix(memory) if memory[0].stack is not None else None
        if stacked is not None:  # the part's memory as it lies: no copy
            keys, values = (t.to(dtype) for t in stacked)
        else:
            keys = torch.cat([e.keys.reshape(objects, key_dim, -1).transpose(1, 2) for e in memory], dim=1).to(dtype)
            values = torch.cat([e.values.reshape(objects, value_dim, -1).transpose(1, 2) for e in memory], dim=1)
            values = values.to(dtype)
        query = query_key.reshape(objects, key_dim, height * width).transpose(1, 2).to(dtype).contiguous()  # O, HW, Ck
        # fused kernels take 4-d inputs (batch, heads, positions, channels): the objects are the batch
        query = query.unsqueeze(1).expand(-1, heads, -1, -1)  # O, heads, HW, Ck (a view)
        keys = keys.unsqueeze(1).expand(-1, heads, -1, -1)  # O, heads, THW, Ck (a view)
        values = values.unflatten(2, (heads, value_dim // heads)).transpose(1, 2)  # O, heads, THW, Cv/heads
        read = F.scaled_dot_product_attention(query, keys, values, scale=1.0 / math.sqrt(key_dim))
        read = read.permute(0, 1, 3, 2).reshape(objects, value_dim, height, width)  # channel = head * Cv/heads + j
    return torch.cat([read.to(query_value.dtype), query_value], dim=1)


MEMORY_READS = {"naive": read_memory_naive, "bounded": read_memory_bounded}


def soft_aggregate(object_probs: torch.Tensor) -> torch.Tensor:
    """Per-object foreground probabilities -> 3-class logits.

    object_probs: O x H x W -> 1 x (O + 1) x H x W, where class 0 (background) is
    ``prod(1 - p_o)``; probabilities are clamped to [1e-7, 1 - 1e-7] before ``log(P / (1 - P))``.
    """
    background = torch.prod(1 - object_probs, dim=0, keepdim=True)
    probs = torch.cat([background, object_probs], dim=0).unsqueeze(0)
    probs = torch.clamp(probs, 1e-7, 1 - 1e-7)
    return torch.log(probs / (1 - probs))


class STM(nn.Module):
    """Space-time memory network with named ``memorize`` and ``segment`` steps.

    Args:
        memory_read: "bounded" (the published read while the affinity fits a memory budget,
            torch's fused attention beyond it: memory flat in T) or "naive" (always the published
            read: memory grows with T * (h * w)^2).
        share_skips: compute the decoder's skip branches once per frame instead of once per
            object, as the published code does (the same sums in another batch layout: equal up
            to float rounding; about 15% less work).
        read_budget: bytes of affinity the bounded read may hold at once (``READ_BUDGET_BYTES``).
        read_follows_autocast: under bf16/fp16 autocast the fused read runs in that dtype instead
            of fp32 (``inference.driver.configure_model`` sets it on CUDA, where the fused kernels
            run half precision on tensor cores; on the demo's finetuned checkpoint it moved 0.013%
            of labels in bf16 and 0.008% in fp16, ``bench/bench_half_read.py``).
        read_heads: the fused read's value heads, 1 or 4 (None: the device's default, see
            :func:`fused_value_heads`); within rounding of each other.
    """

    def __init__(
        self,
        memory_read: str = "bounded",
        share_skips: bool = False,
        read_budget: int = READ_BUDGET_BYTES,
        read_heads: int | None = None,
    ) -> None:
        super().__init__()
        self.Encoder_M = MemoryEncoder()
        self.Encoder_Q = QueryEncoder()
        self.KV_M_r4 = KeyValue()
        self.KV_Q_r4 = KeyValue()
        self.Decoder = Decoder(256)
        self.memory_read = memory_read
        self.share_skips = share_skips
        self.read_budget = read_budget
        self.read_follows_autocast = False
        self.read_heads = read_heads

    @property
    def memory_read(self) -> str:
        return self._memory_read

    @memory_read.setter
    def memory_read(self, name: str) -> None:
        if name not in MEMORY_READS:
            raise ValueError(f"memory_read must be one of {sorted(MEMORY_READS)}, not {name!r}")
        self._memory_read = name

    def memorize(self, frame: torch.Tensor, probs: torch.Tensor) -> MemoryEntry:
        """Encode one frame with its 3-class probabilities into a memory entry.

        frame: 1 x 3 x H x W (ImageNet-normalised), probs: 1 x 3 x H x W [bg, unknown, fg].
        Each object is encoded with ``mask = P(object)`` and ``others = clamp(P(other), 0, 1)``.
        """
        frame, _ = pad_to_multiple(frame, NETWORK_STRIDE)
        probs, _ = pad_to_multiple(probs, NETWORK_STRIDE)
        # a slice, not a list of classes: indexing with a list copies the index to the device and
        # waits for it, which would stop the host queueing steps ahead on a GPU
        object_probs = probs[0, OBJECTS[0] : OBJECTS[-1] + 1]  # O, H, W
        masks = object_probs.unsqueeze(1)  # O, 1, H, W
        others = torch.clamp(object_probs.sum(0, keepdim=True) - object_probs, 0, 1).unsqueeze(1)
        frames = frame.expand(len(OBJECTS), -1, -1, -1)
        r4 = self.Encoder_M(frames, masks, others)  # O, 1024, f16
        keys, values = self.KV_M_r4(r4)
        return MemoryEntry(keys, values)

    def encode_query(self, frame: torch.Tensor) -> QueryFeatures:
        """The query frame's part of ``segment``: the query encoder, its key/value head and (with
        ``share_skips``) the decoder's skip branches. frame: 1 x 3 x H x W (or B frames at once:
        B x 3 x H x W, then :meth:`QueryFeatures.split`)."""
        frame, pads = pad_to_multiple(frame, NETWORK_STRIDE)
        r4, r3, r2 = self.Encoder_Q(frame)
        key, value = self.KV_Q_r4(r4)  # 1 x 128 / 512 x f16
        if self.share_skips:
            # The skip branches see only the query frame: compute them once for all objects.
            skip3, skip2 = self.Decoder.skip_branches(r3, r2)
            return QueryFeatures(key, value, skip3, skip2, pads, skips_done=True)
        return QueryFeatures(key, value, r3, r2, pads, skips_done=False)

    def segment(
        self, frame: torch.Tensor | None, memory: Sequence[MemoryEntry], query: QueryFeatures | None = None
    ) -> torch.Tensor:
        """Segment a query frame against the memory.

        frame: 1 x 3 x H x W, or None when ``query`` (its ``encode_query``, computed earlier: the
        same operations, so the same bits) is given; memory: the entries to read, in order (fixed,
        kept, temporary). Returns 1 x 3 x H x W aggregated logits (softmax over dim 1 gives the
        prediction).
        """
        if not memory:
            raise ValueError("segment needs at least one memory entry")
        if query is None:
            query = self.encode_query(frame)
        objects = memory[0].keys.shape[0]
        query_key = query.key.expand(objects, -1, -1, -1)
        query_value = query.value.expand(objects, -1, -1, -1)
        if self.memory_read == "bounded":
            read = read_memory_bounded(memory, query_key, query_value, self.read_budget, self.read_follows_autocast,
                                       self.read_heads)  # O, 1024, f16  # fmt: skip
        else:
            read = read_memory_naive(memory, query_key, query_value)
        if query.skips_done:
            logits = self.Decoder(read, query.skip3, query.skip2, skips_done=True)  # O, 2, H, W
        else:
            skip3, skip2 = (t.expand(objects, -1, -1, -1) for t in (query.skip3, query.skip2))
            logits = self.Decoder(read, skip3, skip2)
        pads = query.pads
        object_probs = F.softmax(logits, dim=1)[:, 1]  # O, H, W
        return crop_padding(soft_aggregate(object_probs), pads)
