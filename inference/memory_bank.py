"""The memory bank of one propagation part: fixed keyframes, kept frames, one temporary frame."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

Entry = TypeVar("Entry")


@dataclass
class Slot(Generic[Entry]):
    """A memorised frame: its frame index (for logs and tests) and its keys/values."""

    frame: Hashable
    entry: Entry


class MemoryBank(Generic[Entry]):
    """Memory entries in read order: fixed, then kept (oldest first), then temporary.

    - fixed: the part's keyframes, never dropped.
    - kept: predicted frames kept for good, FIFO. After segmenting local frame i, the temporary
      entry is kept if ``(i - 1) % keep_every == 0``; then, if ``len(kept) == max_memory``, the
      oldest kept entry is dropped. So ``len(kept) < max_memory`` between steps, and a read sees
      the fixed entries plus at most ``max_memory`` others (``max_memory - 1`` kept and the
      temporary one). With ``max_memory`` None, kept grows without bound.
    - temporary: the previous frame with its prediction, replaced every step.

    Args:
        fixed: the keyframe slots, in memory order.
        keep_every: keep every keep_every-th predicted frame (>= 1; the interval
            ``PropagationOptions.keep_every`` derived from the checked flags).
        max_memory: bound on non-fixed entries a read sees (>= 1), or None.
    """

    def __init__(self, fixed: list[Slot[Entry]], keep_every: int, max_memory: int | None = None) -> None:
        self.fixed = list(fixed)
        self.kept: deque[Slot[Entry]] = deque()
        self.temporary: Slot[Entry] | None = None
        self.keep_every = keep_every
        self.max_memory = max_memory

    def set_temporary(self, slot: Slot[Entry]) -> None:
        """Memorise the previous frame for the next read (replaces the last temporary entry)."""
        self.temporary = slot

    def slots(self) -> list[Slot[Entry]]:
        """All entries in read order: fixed, kept (oldest first), temporary."""
        temporary = [self.temporary] if self.temporary is not None else []
        return self.fixed + list(self.kept) + temporary

    def frames(self) -> list[Hashable]:
        return [slot.frame for slot in self.slots()]

    def after_segment(self, local_index: int) -> Slot[Entry] | None:
        """Bookkeeping after segmenting the part's frame ``local_index`` (>= 1); returns the kept
        slot it dropped, if any."""
        if (local_index - 1) % self.keep_every == 0 and self.temporary is not None:
            self.kept.append(self.temporary)
            self.temporary = None
        if self.max_memory is not None and len(self.kept) == self.max_memory:
            return self.kept.popleft()
        return None
