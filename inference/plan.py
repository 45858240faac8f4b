"""The parts plan: which frames each propagation part visits, from which keyframes.

Pure functions, no network: see docs/method.md, "The parts plan" and "The memory rules".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    """One propagation pass.

    frames: frame indices in visiting order; ``frames[0]`` is the part's starting keyframe.
    fixed: keyframe indices held in memory for the whole part, in memory order.
    """

    frames: tuple[int, ...]
    fixed: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def start(self) -> int:
        return self.frames[0]


def plan_parts(keyframes: Sequence[int], num_frames: int) -> list[Part]:
    """Parts for a clip of ``num_frames`` frames with the given keyframe indices.

    In order: the head (g0 back to 0, if g0 > 0); for each consecutive pair (ga, gb) forward
    ga..gb-1 then backward gb..ga+1 (fixed memory ga, gb); the tail (gk to the end, if gk < N-1).
    Adjacent keyframes give two one-frame parts, each holding only its keyframe.
    """
    if num_frames < 1:
        raise ValueError("a clip needs at least one frame")
    keys = sorted(set(keyframes))
    if not keys:
        raise ValueError("at least one keyframe is needed")
    if keys[0] < 0 or keys[-1] >= num_frames:
        raise ValueError(f"keyframes {keys} out of range for {num_frames} frames")
    parts = []
    if keys[0] > 0:
        parts.append(Part(tuple(range(keys[0], -1, -1)), (keys[0],)))
    for first, second in zip(keys, keys[1:]):
        parts.append(Part(tuple(range(first, second)), (first, second)))
        backward = tuple(range(second, first, -1))
        parts.append(Part(backward, (first, second)))
    if keys[-1] < num_frames - 1:
        parts.append(Part(tuple(range(keys[-1], num_frames)), (keys[-1],)))
    return parts


def work_units(parts: Sequence[Part], indices: Sequence[int], segments_together: bool) -> list[list[int]]:
    """The parts ``indices`` (in plan order) grouped into the units shared out among ranks: with
    ``segments_together`` the forward and the backward part of a segment (the same two fixed
    keyframes) form one unit, so that the second can reuse the query features of the first;
    otherwise every part is its own unit."""
    units: list[list[int]] = []
    for k in indices:
        if segments_together and units and len(parts[k].fixed) == 2 and parts[units[-1][0]].fixed == parts[k].fixed:
            units[-1].append(k)
        else:
            units.append([k])
    return units


def part_confidence(part: Part) -> list[float]:
    """Ensemble weights of a part's frames in visiting order: ``1 - i / part_length``."""
    return [1 - i / len(part) for i in range(len(part))]
