"""The result folder of one propagated clip: every path and file name of it is spelled here.

::

    <save>/<clip>_mem<N>/          N: --mem_every as given (0 when derived from --max_memory)
        conf.json                  one {stem: weight} dict per part; written last (marks a finished run)
        part<k>/<stem>_tri.png     3-class probabilities of part k, 8-bit, [bg, unknown, fg]
        part<k>/inputs.json        what part k was computed from (its fingerprint), for reuse
        ensemble/<stem>_trimap.png the fused trimap, 0 / 128 / 255
        envis/<stem>.png           half frame, half fused trimap
        uncertainty.json           per frame: how much its predictions disagree; frames to annotate next
        uncertainty.png            that score along the clip
        matte/                     alpha mattes, foregrounds and composites (tgm.py matte)

Everything else asks this module for these names.
"""

from __future__ import annotations

import glob
import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from dataset.clip import TRIMAP_SUFFIX, stems_with
from utils.errors import UserError
from utils.images import png_header
from utils.io import FolderLock, atomic_write_json

MEM_SUFFIX = re.compile(r"_mem\d+$")
PART_PREFIX = "part"
PART_SUFFIX = "_tri.png"
CONF_NAME = "conf.json"
PART_RECORD = "inputs.json"
REUSE_PREFIX = ".reuse-"  # finished parts waiting to be adopted by the running plan
ENSEMBLE_DIR = "ensemble"
ENVIS_DIR = "envis"
UNCERTAINTY_JSON = "uncertainty.json"
UNCERTAINTY_PNG = "uncertainty.png"
MATTE_DIR = "matte"

Conf = list[dict[str, float]]


def result_dir_name(clip_name: str, mem_every: int) -> str:
    """``<clip>_mem<N>``, N as given on the command line (0 when derived from --max_memory)."""
    return f"{clip_name}_mem{mem_every}"


def clip_name(result_dir_name: str) -> str:
    """``<clip>_mem<N>`` -> ``<clip>``."""
    return MEM_SUFFIX.sub("", result_dir_name)


def is_result_dir_name(name: str) -> bool:
    return MEM_SUFFIX.search(name) is not None


class ResultFolder:
    """Paths and files of one ``<clip>_mem<N>`` folder (nothing is created by asking)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, save_root: str | Path, clip: str, mem_every: int) -> ResultFolder:
        """The result folder of ``clip`` propagated with ``--mem_every mem_every`` under ``save_root``."""
        return cls(Path(save_root) / result_dir_name(clip, mem_every))

    def __repr__(self) -> str:
        return f"ResultFolder({str(self.path)!r})"

    def lock(self) -> FolderLock:
        """Held by whoever writes this folder (propagation, fusing, matting): a second writer is refused."""
        return FolderLock(self.path, "run (--save)", named_here=True)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def clip_name(self) -> str:
        return clip_name(self.path.name)

    # --- parts ----------------------------------------------------------------------------------

    def part_dir(self, k: int) -> Path:
        return self.path / f"{PART_PREFIX}{k}"

    def part_png(self, k: int, stem: str) -> Path:
        return self.part_dir(k) / f"{stem}{PART_SUFFIX}"

    def part_dirs(self) -> dict[int, Path]:
        """Existing ``part<k>`` folders by k."""
        found = {}
        if self.path.is_dir():
            for entry in self.path.iterdir():
                suffix = entry.name[len(PART_PREFIX) :]
                if entry.name.startswith(PART_PREFIX) and suffix.isdigit() and entry.is_dir():
                    found[int(suffix)] = entry
        return found

    def part_stems(self, k: int) -> list[str]:
        """Stems of the probability PNGs present in part k."""
        return stems_with(self.part_dir(k), PART_SUFFIX)

    def part_record(self, k: int) -> Path:
        return self.part_dir(k) / PART_RECORD

    def write_part_record(self, k: int, record: dict) -> None:
        """Mark part k finished: what it was computed from (written after its last PNG)."""
        atomic_write_json(self.part_record(k), record, durable=True)

    def _finished_fingerprint(self, part_dir: Path) -> str | None:
        """The fingerprint of a finished part folder: its record is there and so is every PNG it names,
        whole (a PNG emptied or cut short by a power loss makes the part be recomputed)."""
        try:
            record = json.loads((part_dir / PART_RECORD).read_text())
            fingerprint, frames = record["fingerprint"], [stem for stem, _ in record["frames"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not all(_whole_png(part_dir / f"{stem}{PART_SUFFIX}") for stem in frames):
            return None
        return fingerprint if isinstance(fingerprint, str) and fingerprint.isalnum() else None

    def adopt_parts(self, fingerprints: list[str], recompute: bool = False) -> tuple[set[int], bool]:
        """Prepare the folder for a run whose planned part k has ``fingerprints[k]``.

        Finished parts of earlier runs whose fingerprint is planned are kept, moved to their new
        index; everything else of earlier runs' parts is removed (all of it with ``recompute``),
        and conf.json too (it is rewritten at the end; its absence marks an unfinished run).
        Returns the reused indices and whether the parts are exactly those of the last run (then
        the fused outputs still describe them). Safe to interrupt: kept parts wait in
        ``.reuse-<fingerprint>`` folders, which the next run adopts too.
        """
        self.conf_path.unlink(missing_ok=True)
        before = {k: self._finished_fingerprint(d) for k, d in self.part_dirs().items()}
        for k, part_dir in self.part_dirs().items():
            stash = self.path / f"{REUSE_PREFIX}{before[k]}"
            if before[k] is None or recompute or stash.exists():
                shutil.rmtree(part_dir)
            else:
                part_dir.rename(stash)
        reused = set()
        for k, fingerprint in enumerate(fingerprints):
            stash = self.path / f"{REUSE_PREFIX}{fingerprint}"
            if stash.is_dir() and not recompute:
                stash.rename(self.part_dir(k))
                reused.add(k)
        for leftover in self.path.glob(f"{REUSE_PREFIX}*"):
            shutil.rmtree(leftover)
        unchanged = before == dict(enumerate(fingerprints))
        return reused, unchanged

    # --- conf.json ------------------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.path / CONF_NAME

    def is_finished(self) -> bool:
        """test_mf_2.py finished here (it writes conf.json last)."""
        return self.conf_path.exists()

    def read_conf(self) -> Conf:
        """conf.json: one ``{stem: weight}`` dict per part. ValueError if it is not that."""
        with open(self.conf_path) as handle:
            conf = json.load(handle)
        if not isinstance(conf, list) or not all(isinstance(part, dict) for part in conf):
            raise ValueError("conf.json must hold a list of {stem: weight} dicts")
        for k, part in enumerate(conf):
            for stem, weight in part.items():
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    raise ValueError(f"part {k} gives frame {stem} the weight {weight!r}, not a number")
        return conf

    def write_conf(self, conf: Conf) -> None:
        atomic_write_json(self.conf_path, conf, durable=True)

    # --- the fused result -----------------------------------------------------------------------

    @property
    def ensemble_dir(self) -> Path:
        return self.path / ENSEMBLE_DIR

    @property
    def envis_dir(self) -> Path:
        return self.path / ENVIS_DIR

    @property
    def matte_dir(self) -> Path:
        return self.path / MATTE_DIR

    @property
    def uncertainty_json(self) -> Path:
        return self.path / UNCERTAINTY_JSON

    @property
    def uncertainty_png(self) -> Path:
        return self.path / UNCERTAINTY_PNG

    def clear_fused(self) -> None:
        """Remove what ensemble.py wrote (ensemble/, envis/, uncertainty.*): after parts changed it
        would describe other parts."""
        for folder in (self.ensemble_dir, self.envis_dir):
            if folder.is_dir():
                shutil.rmtree(folder)
        for path in (self.uncertainty_json, self.uncertainty_png):
            path.unlink(missing_ok=True)

    def is_fused(self, stems: Iterable[str]) -> bool:
        """Propagation finished, the ensemble holds a trimap for each of ``stems`` and the
        uncertainty is written."""
        return (
            self.is_finished()
            and self.uncertainty_json.exists()
            and all(self.ensemble_png(stem).exists() for stem in stems)
        )

    def ensemble_png(self, stem: str) -> Path:
        return self.ensemble_dir / f"{stem}{TRIMAP_SUFFIX}"

    def envis_png(self, stem: str) -> Path:
        return self.envis_dir / f"{stem}.png"

    def ensemble_stems(self) -> list[str]:
        """Stems of the fused trimaps present, sorted."""
        return stems_with(self.ensemble_dir, TRIMAP_SUFFIX)


def _whole_png(path: Path) -> bool:
    try:
        return path.is_file() and png_header(path) is not None
    except UserError:  # cut short
        return False


def results_of(save_root: Path, clip: str) -> list[ResultFolder]:
    """The result folders of ``clip`` under ``save_root`` (``<clip>_mem<N>`` for any N), newest first."""
    if not Path(save_root).is_dir():
        return []
    found = [p for p in Path(save_root).glob(f"{glob.escape(clip)}_mem*") if p.is_dir() and clip_name(p.name) == clip]
    return [ResultFolder(p) for p in sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)]


def select_results(predroot: Path, names: Iterable[str] = ()) -> list[ResultFolder]:
    """The result folders under ``predroot`` (``--predroot`` of ensemble.py) to fuse.

    names: folder names (``clip_mem5``) or clip names (all their ``clip_mem*`` folders); none:
    every finished folder, refusing when an unfinished ``*_mem<N>`` folder is among them.
    Raises UserError naming what is missing.
    """
    names = list(names)
    if not predroot.is_dir():
        raise UserError(f"--predroot {predroot} is not a folder; pass the --save folder of test_mf_2.py")
    if not names:
        folders = [ResultFolder(p) for p in sorted(predroot.iterdir()) if p.is_dir() and not p.name.startswith(".")]
        unfinished = [f for f in folders if not f.is_finished() and is_result_dir_name(f.name)]
        if unfinished:
            raise UserError(
                f"{unfinished[0].conf_path} is missing: {unfinished[0].path} is an unfinished test_mf_2.py run; "
                "rerun it (or name the result folders to fuse)"
            )
        found = [f for f in folders if f.is_finished()]
        if not found:
            raise UserError(
                f"--predroot {predroot} has no result folders with a {CONF_NAME}; run test_mf_2.py --save "
                f"{predroot} first (a folder without {CONF_NAME} is an unfinished run: rerun it)"
            )
        return found
    selected = []
    for name in names:
        direct = predroot / name
        matches = [direct] if direct.is_dir() else sorted(predroot.glob(f"{name}_mem*"))
        matches = [m for m in matches if m.is_dir() and clip_name(m.name) in (clip_name(name), name)]
        if not matches:
            raise UserError(
                f"no result folder {predroot / name} (nor {name}_mem*); names must be folders under --predroot"
            )
        selected.extend(ResultFolder(m) for m in matches)
    return selected
