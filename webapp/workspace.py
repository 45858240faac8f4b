"""The app's view of a workspace, without Flask: clips, frames, result folders and saving trimaps.

The routes of ``webapp/server.py`` only translate HTTP to these calls and back; tests exercise
them directly. Every file this view hands out is found through names that exist (a clip, a frame
stem, a kind of output), never through a path the client sent, and is refused when it resolves
outside the workspace or the save folder (a symlinked frame pointing elsewhere is not served).

Listings are cached by the modification time of their folder, and frame sizes come from the PNG
header, so a playing page does not rescan the workspace or decode a frame to learn its size.

A clip is a sub-folder with frames, or a video file in the workspace (its keyframes go to
``<video stem>_trimaps/`` beside it, made on the first save): a video's frames are decoded on
request and sent as PNGs (the last few kept).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from dataset.clip import ALPHA_SUFFIX, FRAME_SUFFIX, TRIMAP_SUFFIX, default_trimap_dir, stems_with
from dataset.segment import Box, PersonSegmenter, box_trimap, person_trimap
from dataset.trimap import encode_labels, mask_to_trimap, snap_trimap
from dataset.trimap_tools import BACKUP_SUFFIX, binarise
from dataset.video import FrameCache, VideoFrames, is_video, probe_video
from inference.layout import ResultFolder, results_of
from inference.uncertainty import read_uncertainty
from matting.sequence import ALPHA_EXR_SUFFIX, COMPOSITE_SUFFIX, FG_EXR_SUFFIX, FG_SUFFIX
from utils.errors import UserError
from utils.images import decode_rgb, encode_png, parse_png_header, png_header, to_grey
from utils.io import (
    NotARegularFileError,
    atomic_write_bytes,
    atomic_write_png,
    create_exclusive,
    open_regular,
    private_subfolder,
    read_regular,
)

log = logging.getLogger(__name__)

MATTE_KINDS = {"alpha": ALPHA_SUFFIX, "fg": FG_SUFFIX, "comp": COMPOSITE_SUFFIX}
FOREGROUND_VIDEO = "foreground.mov"  # the matte job's last step: the RGBA foregrounds as ProRes 4444 with alpha
MAX_BAND = 500
SUBJECT_LEFT = 0.2  # a cut-out whose sure subject is under this share of its unknown band gets a warning
VIDEO_FRAMES_KEPT = 24  # encoded PNGs of video frames kept per app (stepping back and forth is instant)
CACHE_DIR = ".app"  # in the save folder: thumbnails and display copies (webapp/jobs.py keeps its files there too)
THUMB_HEIGHT = 54  # the frame strip's thumbnails, pixels high
MAX_FRAME_PIXELS = 100_000_000  # a frame decoded for a thumbnail or a display copy: 8K is 33 megapixels
MAX_SMALL_FILE = 16 << 20  # uncertainty.json, a trimap kept as its backup: read whole, bounded
DISPLAY_QUALITIES = range(30, 101)  # JPEG quality of the display copies (playback); exact work stays on PNGs


class ViewError(Exception):
    """A request the view refuses: an HTTP status and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Cached:
    """A value computed from a folder, recomputed when the folder's modification time changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[Path, tuple[int, object]] = {}

    def get(self, folder: Path, compute: Callable[[], object]) -> object:
        try:
            stamp = folder.stat().st_mtime_ns
        except OSError:
            return compute()
        with self._lock:
            cached = self._values.get(folder)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        value = compute()
        with self._lock:
            self._values[folder] = (stamp, value)
        return value


class WorkspaceView:
    """Clips of ``workspace`` (sub-folders with ``<stem>_rgb.png`` frames) and their results in ``save``."""

    def __init__(self, workspace: Path, save: Path) -> None:
        self.workspace = Path(workspace).resolve()
        self.save = Path(save).resolve()
        self._listings = _Cached()
        self._sizes = _Cached()
        self._save_locks: dict[Path, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._videos: dict[Path, tuple[int, VideoFrames]] = {}
        self._person: PersonSegmenter | None = None
        self._video_pngs: OrderedDict[tuple[Path, int, int], bytes] = OrderedDict()

    # --- finding things -------------------------------------------------------------------------

    def clips(self) -> dict[str, Path]:
        """Sub-folders holding frames, and video files (by stem; a folder wins over a video of its
        name). An entry whose real location is outside the workspace (a link planted there) is no
        clip. The entries are cached by the workspace's modification time, a folder's frames by its
        own (a clip being extracted appears once it has frames)."""
        real_workspace = self.workspace.resolve()

        def entries() -> list[Path]:
            found = []
            for path in sorted(self.workspace.iterdir()):
                if path.name.startswith("."):
                    continue
                try:
                    if real_workspace in path.resolve(strict=True).parents:
                        found.append(path)
                except (OSError, RuntimeError):  # a broken or looping link
                    continue
            return found

        found = {}
        for path in self._listings.get(self.workspace, entries):
            if path.is_file() and is_video(path):
                found.setdefault(path.stem, path)
        for path in self._listings.get(self.workspace, entries):
            if path.is_dir() and self._frame_stems(path):
                found[path.name] = path
        return dict(sorted(found.items()))

    def _frame_stems(self, folder: Path) -> list[str]:
        if folder.is_file():
            return self._video(folder).info.stems
        return self._listings.get(folder, lambda: stems_with(folder, FRAME_SUFFIX))

    def _video(self, path: Path) -> VideoFrames:
        """The decoder of a video clip, made again when the file changes."""
        stamp = path.stat().st_mtime_ns
        with self._locks_lock:
            kept = self._videos.get(path)
            if kept is not None and kept[0] == stamp:
                return kept[1]
        try:
            frames = VideoFrames(probe_video(path), FrameCache(256 << 20))
        except UserError as exc:
            raise ViewError(422, str(exc)) from exc
        with self._locks_lock:
            self._videos[path] = (stamp, frames)
        return frames

    def trimap_dir(self, name: str) -> Path:
        """Where a clip's keyframe trimaps are: its folder, or ``<stem>_trimaps/`` beside its video."""
        path = self.clip_dir(name)
        return default_trimap_dir(path) if path.is_file() else path

    def video_frame_png(self, name: str, stem: str) -> bytes | None:
        """A video clip's frame as PNG bytes (None for a folder clip: its frame files are served)."""
        path = self.clip_dir(name)
        if not path.is_file():
            return None
        index = self.stems(name).index(self.frame_stem(name, stem))
        video = self._video(path)
        key = (path, path.stat().st_mtime_ns, index)
        with self._locks_lock:
            if key in self._video_pngs:
                self._video_pngs.move_to_end(key)
                return self._video_pngs[key]
        try:
            data = encode_png(np.ascontiguousarray(video.read_rgb(index)[..., ::-1]))
        except UserError as exc:
            raise ViewError(422, str(exc)) from exc
        with self._locks_lock:
            self._video_pngs[key] = data
            while len(self._video_pngs) > VIDEO_FRAMES_KEPT:
                self._video_pngs.popitem(last=False)
        return data

    def clip_dir(self, name: str) -> Path:
        found = self.clips().get(name)
        if found is None:
            raise ViewError(404, f"no clip {name!r} in the workspace")
        return found

    def stems(self, name: str) -> list[str]:
        stems = self._frame_stems(self.clip_dir(name))
        if not stems:
            raise ViewError(404, f"clip {name} has no frames (any more)")
        return stems

    def keyframes(self, name: str) -> list[str]:
        return stems_with(self.trimap_dir(name), TRIMAP_SUFFIX)

    def frame_stem(self, name: str, stem: str) -> str:
        if stem not in set(self.stems(name)):
            raise ViewError(404, f"clip {name} has no frame {stem!r}")
        return stem

    def frame_size(self, name: str) -> tuple[int, int]:
        """(height, width) of the clip's frames, from the first frame's PNG header (or the video's stream)."""
        folder = self.clip_dir(name)
        if folder.is_file():
            info = self._video(folder).info
            return info.height, info.width
        first = self.frame_file(name, self.stems(name)[0])  # inside the workspace, a regular file

        def read() -> tuple[int, int]:
            try:
                header = png_header(first)
            except UserError as exc:
                raise ViewError(422, str(exc)) from exc
            if header is None:
                raise ViewError(422, f"{first.name} of clip {name} is not a PNG; re-export the clip's frames as PNG")
            return header.height, header.width

        return self._sizes.get(first, read)

    def result(self, name: str) -> ResultFolder | None:
        """The clip's result folder to show: the newest finished ``<clip>_mem<N>`` (any N), else the newest."""
        self.clip_dir(name)
        folders = [f for f in results_of(self.save, name) if not f.path.is_symlink()]  # a planted link is no result
        finished = [f for f in folders if f.is_finished()]
        return (finished or folders or [None])[0]

    def check_job_paths(self, name: str) -> None:
        """Before a job on clip ``name`` (its commands follow paths as a user's commands do): every link
        among the clip's frames and trimaps leads inside the workspace, and nothing the job names and
        writes under --save (its result folders, ``configs``, ``train_log`` and the clip's entries in
        them) is a link. ViewError 409 naming the first that is not so."""
        clip = self.clip_dir(name)
        folders = [clip] if clip.is_dir() else []
        trimaps = self.trimap_dir(name)
        if trimaps.is_symlink() or trimaps.is_dir():
            folders.append(trimaps)
        for folder in folders:
            for entry in [folder, *folder.iterdir()]:
                if not entry.is_symlink():
                    continue
                try:
                    real = entry.resolve(strict=True)
                except (OSError, RuntimeError):
                    raise ViewError(409, f"{entry} is a broken link; remove it or put the file itself there") from None
                if self.workspace not in real.parents:
                    raise ViewError(409, f"{entry} is a link to {real}, outside the workspace; the app reads only "
                                         "inside its folders: copy the file in instead of linking it")  # fmt: skip
        named = [self.save / "configs", self.save / "configs" / f"{name}.yaml", self.save / "train_log",
                 *self.save.glob(f"{glob.escape(name)}_mem*")]  # fmt: skip
        if (self.save / "train_log").is_dir() and not (self.save / "train_log").is_symlink():
            named += (self.save / "train_log").glob(f"{glob.escape(name)}*")
        for path in named:
            if path.is_symlink():
                raise ViewError(409, f"{path} is a link: a job writes, replaces and removes files there, so "
                                     "the app does not follow it; remove the link or move the folder in")  # fmt: skip

    # --- what the page lists --------------------------------------------------------------------

    def summary(self) -> list[dict]:
        """Every clip with its counts; a clip that cannot be read is listed with why (the others still are)."""
        listed = []
        for name in self.clips():
            try:
                result = self.result(name)
                listed.append({"name": name, "frames": len(self.stems(name)), "keyframes": len(self.keyframes(name)),
                               "propagated": bool(result and result.is_finished())})  # fmt: skip
            except (ViewError, UserError, OSError) as exc:
                message = exc.message if isinstance(exc, ViewError) else str(exc)
                listed.append({"name": name, "frames": 0, "keyframes": 0, "propagated": False, "error": message})
        return listed

    def detail(self, name: str) -> dict:
        stems = self.stems(name)
        height, width = self.frame_size(name)
        result = self.result(name)
        uncertainty = fused = matted = None
        if result is not None:
            try:
                uncertainty = read_uncertainty(result, MAX_SMALL_FILE) if result.uncertainty_json.exists() else None
            except (OSError, ValueError, RecursionError, UserError):
                uncertainty = None  # being rewritten by a job: the next poll reads it
            fused = result.ensemble_stems() if result.is_finished() else []
            matted = stems_with(result.matte_dir, COMPOSITE_SUFFIX)
        video = result is not None and self._current_video(result) is not None
        exr = result is not None and bool(self._current_exrs(result))
        return {
            "name": name, "stems": stems, "height": height, "width": width, "keyframes": self.keyframes(name),
            "result": {"folder": result.name if result else None, "fused": fused or [], "uncertainty": uncertainty,
                       "matted": matted or [], "video": video, "exr": exr},
        }  # fmt: skip

    @staticmethod
    def _current_video(result: ResultFolder) -> Path | None:
        """The clip's foreground video if it was made after the fused trimaps last changed (a rerun
        since then leaves it describing the old ones until the next matte job); else None."""
        path = result.matte_dir / FOREGROUND_VIDEO
        try:
            made, fused = path.stat().st_mtime_ns, result.ensemble_dir.stat().st_mtime_ns
        except OSError:
            return None
        return path if made >= fused else None

    @staticmethod
    def _current_exrs(result: ResultFolder) -> list[Path]:
        """The EXR mattes and foregrounds of every fused frame, when all exist and were made after the
        fused trimaps last changed (as for the video); else []."""
        stems = result.ensemble_stems() if result.is_finished() else []
        paths = [result.matte_dir / f"{s}{suffix}" for s in stems for suffix in (ALPHA_EXR_SUFFIX, FG_EXR_SUFFIX)]
        try:
            fused = result.ensemble_dir.stat().st_mtime_ns
            if not paths or any(p.stat().st_mtime_ns < fused for p in paths):
                return []
        except OSError:
            return []
        return paths

    def exr_files(self, name: str) -> list[tuple[str, Path]]:
        """(name in the archive, file) of the clip's EXR sequence, every file inside --save; ViewError
        404 when the current trimaps have none (matte with EXR first)."""
        result = self.result(name)
        paths = [] if result is None else self._current_exrs(result)
        if not paths:
            raise ViewError(404, f"{name} has no EXR sequence from its current trimaps: run matting with EXR")
        return [(p.name, self._inside(p, self.save, f"EXR {p.name} of {name}")) for p in paths]

    # --- files to serve -------------------------------------------------------------------------

    def _inside(self, path: Path, root: Path, what: str) -> Path:
        """``path`` if it is a file whose real location is inside ``root``; else ViewError 404."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ViewError(404, f"{what} does not exist (yet)") from None
        if root not in real.parents or not real.is_file():
            raise ViewError(404, f"{what} is not a file inside the app's folders")
        return real

    def open_inside(self, path: Path, root: Path, what: str, limit: int | None = None):
        """``path`` (as :meth:`_inside` finds it) opened for reading: the file checked is the file read,
        never a link or a FIFO put in its place a moment later (ViewError 404 or 403 otherwise)."""
        real = self._inside(path, root, what)
        try:
            return open_regular(real, what, limit)
        except NotARegularFileError as exc:
            raise ViewError(404, str(exc)) from None
        except PermissionError:
            raise ViewError(403, f"{what} cannot be read (permission denied); make it readable") from None
        except OSError:
            raise ViewError(404, f"{what} does not exist (yet)") from None

    def frame_file(self, name: str, stem: str) -> Path:
        folder = self.clip_dir(name)
        path = folder / f"{self.frame_stem(name, stem)}{FRAME_SUFFIX}"
        return self._inside(path, self.workspace, f"frame {stem} of {name}")

    def keyframe_file(self, name: str, stem: str) -> Path:
        path = self.trimap_dir(name) / f"{self.frame_stem(name, stem)}{TRIMAP_SUFFIX}"
        if not path.exists():
            raise ViewError(404, f"frame {stem} of {name} has no keyframe trimap yet")
        return self._inside(path, self.workspace, f"the trimap of frame {stem}")

    def result_file(self, name: str, stem: str) -> Path:
        result = self.result(name)
        if result is None or not result.ensemble_png(self.frame_stem(name, stem)).exists():
            raise ViewError(404, f"frame {stem} of {name} has no propagated trimap yet: run propagation")
        return self._inside(result.ensemble_png(stem), self.save, f"the propagated trimap of frame {stem}")

    def matte_file(self, name: str, stem: str, kind: str) -> Path:
        if kind not in MATTE_KINDS:
            raise ViewError(400, f"kind must be one of {', '.join(MATTE_KINDS)}")
        result = self.result(name)
        path = None if result is None else result.matte_dir / f"{self.frame_stem(name, stem)}{MATTE_KINDS[kind]}"
        if path is None or not path.exists():
            raise ViewError(404, f"frame {stem} of {name} is not matted yet: run matting")
        return self._inside(path, self.save, f"the {kind} of frame {stem}")

    def video_file(self, name: str) -> Path:
        result = self.result(name)
        path = None if result is None else self._current_video(result)
        if path is None:
            raise ViewError(404, f"{name} has no foreground video from its current trimaps: run matting")
        return self._inside(path, self.save, f"the foreground video of {name}")

    def uncertainty_file(self, name: str) -> Path:
        result = self.result(name)
        if result is None or not result.uncertainty_png.exists():
            raise ViewError(404, "no uncertainty yet: run propagation")
        return self._inside(result.uncertainty_png, self.save, "the uncertainty plot")

    # --- pictures for looking at: thumbnails and display copies ---------------------------------

    def read_frame_rgb(self, name: str, stem: str) -> np.ndarray:
        """A frame as H x W x 3 uint8 RGB (decoded from a video clip, or its PNG)."""
        path = self.clip_dir(name)
        stem = self.frame_stem(name, stem)
        if path.is_file():
            try:
                return self._video(path).read_rgb(self.stems(name).index(stem))
            except UserError as exc:
                raise ViewError(422, str(exc)) from exc
        limit = 6 * MAX_FRAME_PIXELS + (1 << 20)  # a PNG is never much larger than its raw pixels
        with self.open_inside(self.frame_file(name, stem), self.workspace, f"frame {stem} of {name}", limit) as handle:
            head = handle.read(26)
            header = parse_png_header(head)
            if header is not None and header.width * header.height > MAX_FRAME_PIXELS:
                size = f"{header.width}x{header.height}"
                raise ViewError(422, f"frame {stem} of {name} is {size}: more than the {MAX_FRAME_PIXELS // 10**6} "
                                     "megapixels the app shows; scale the clip down")  # fmt: skip
            data = head + handle.read()
        try:
            return decode_rgb(data, f"frame {stem} of {name}")
        except UserError as exc:
            raise ViewError(422, str(exc)) from None

    def _source_stamp(self, name: str, stem: str) -> int:
        path = self.clip_dir(name)
        return (path if path.is_file() else self.frame_file(name, stem)).stat().st_mtime_ns

    def _cached_jpeg(
        self, kind: str, name: str, stem: str, make: Callable[[np.ndarray], np.ndarray], quality: int
    ) -> Path:
        """A JPEG made from the frame once and kept in ``<save>/.app/<kind>/<clip>/``; made again
        when the frame (or the video) is newer than it."""
        stem = self.frame_stem(name, stem)
        file_name = f"{stem}.q{quality}.jpg"
        if len(file_name.encode()) > 200:  # a file name ends at 255 bytes, its temporary one's too
            file_name = f"{hashlib.sha256(stem.encode()).hexdigest()}.q{quality}.jpg"
        folder = private_subfolder(self.save, CACHE_DIR, kind, name)  # never written through a planted link
        path = folder / file_name
        stamp = self._source_stamp(name, stem)
        if not (path.is_file() and path.stat().st_mtime_ns >= stamp):
            bgr = np.ascontiguousarray(make(self.read_frame_rgb(name, stem))[..., ::-1])
            ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ViewError(500, f"frame {stem} of {name} could not be encoded as JPEG")
            atomic_write_bytes(path, data.tobytes())
        return self._inside(path, self.save, f"the {kind} copy of frame {stem}")

    def thumbnail_file(self, name: str, stem: str) -> Path:
        """A small JPEG of the frame for the frame strip (``THUMB_HEIGHT`` px high)."""

        def shrink(rgb: np.ndarray) -> np.ndarray:
            scale = THUMB_HEIGHT / rgb.shape[0]
            size = (max(1, round(rgb.shape[1] * scale)), THUMB_HEIGHT)
            return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb

        return self._cached_jpeg("thumbs", name, stem, shrink, 80)

    def display_file(self, name: str, stem: str, quality: int = 85) -> Path:
        """The frame as a JPEG of ``quality`` for viewing and playback (a tenth of a PNG's bytes;
        painting and saving never use it)."""
        if quality not in DISPLAY_QUALITIES:
            raise ViewError(400, f"quality must be from {DISPLAY_QUALITIES.start} to {DISPLAY_QUALITIES.stop - 1}")
        return self._cached_jpeg("display", name, stem, lambda rgb: rgb, quality)

    # --- trimaps from a box and strokes, or of people -------------------------------------------

    def trimap_from_box(
        self, name: str, stem: str, box: list | None, band_per_side: int, fg_png: bytes = b"", bg_png: bytes = b""
    ) -> bytes:
        """A trimap (PNG bytes) of frame ``stem``: GrabCut from ``box`` ([x0, y0, x1, y1]) and/or
        stroke PNGs (non-black = stroked), with ``band_per_side`` px of unknown (``trimap from-box``)."""
        stem = self.frame_stem(name, stem)
        if not 0 <= band_per_side <= MAX_BAND:
            raise ViewError(400, f"band must be between 0 and {MAX_BAND} pixels")
        height, width = self.frame_size(name)
        parsed = None
        if box is not None:
            numbers = (
                isinstance(box, list)
                and len(box) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
            )
            if not numbers:
                raise ViewError(400, "box must be [x0, y0, x1, y1]: four finite numbers of pixels")
            try:
                parsed = Box.clipped(*(round(v) for v in box), width, height)
            except UserError as exc:
                raise ViewError(400, str(exc)) from exc
        fg = self.read_upload(name, stem, fg_png, "foreground strokes") > 0 if fg_png else None
        bg = self.read_upload(name, stem, bg_png, "background strokes") > 0 if bg_png else None
        if parsed is None and (fg is None or not fg.any()):
            raise ViewError(400, "draw a box around the subject (or foreground strokes) first")
        labels = box_trimap(self.read_frame_rgb(name, stem), parsed, band_per_side, fg, bg)
        return encode_png(encode_labels(labels))

    @staticmethod
    def trimap_warning(png: bytes) -> str | None:
        """What a person should know of a trimap the app just made: a subject that nearly vanished in
        its unknown band (a band wide for a small subject); None when all is well."""
        labels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
        unknown, foreground = int(((labels > 0) & (labels < 255)).sum()), int((labels == 255).sum())
        if unknown and foreground < SUBJECT_LEFT * unknown:
            return (
                f"only {foreground} px of sure subject against {unknown} px of unknown: the band swallows this small "
                "subject; narrow the band (the slider) or paint the subject's core"
            )
        return None

    def trimap_of_person(self, name: str, stem: str, band_per_side: int) -> bytes:
        """A trimap (PNG bytes) of the people in frame ``stem`` (the optional person segmenter;
        UserError saying how to install it when it is not)."""
        stem = self.frame_stem(name, stem)
        if not 0 <= band_per_side <= MAX_BAND:
            raise ViewError(400, f"band must be between 0 and {MAX_BAND} pixels")
        with self._locks_lock:
            if self._person is None:
                self._person = PersonSegmenter()
        probability = self._person.probability(self.read_frame_rgb(name, stem))
        return encode_png(encode_labels(person_trimap(probability, band_per_side)))

    # --- uploads and saving ---------------------------------------------------------------------

    def read_upload(self, name: str, stem: str, data: bytes, what: str) -> np.ndarray:
        """A PNG the client sent for frame ``stem``, as grey H x W uint8: its size is read from the
        header and checked against the frame before it is decoded (a small file cannot become
        gigabytes of pixels)."""
        if not data:
            raise ViewError(400, f"no {what} image in the request")
        header = parse_png_header(data[:26])
        if header is None:
            raise ViewError(400, f"the {what} is not an image the app takes: send a PNG")
        height, width = self.frame_size(name)
        if (header.height, header.width) != (height, width):
            raise ViewError(400, f"the {what} is {header.width}x{header.height} but frame {stem} is {width}x{height}")
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype not in (np.uint8, np.uint16) or image.shape[:2] != (height, width):
            raise ViewError(400, f"the {what} is not a PNG OpenCV can decode (send an 8- or 16-bit PNG)")
        return to_grey(image)

    def _save_lock(self, path: Path) -> threading.Lock:
        with self._locks_lock:
            return self._save_locks.setdefault(path, threading.Lock())

    def save_keyframe(self, name: str, stem: str, data: bytes) -> dict:
        """Snap an uploaded trimap to 0/128/255 and save it as the frame's keyframe trimap; the
        trimap it replaces is kept once as ``<stem>_trimap.orig.png``. Saves of one trimap are
        serialised; the backup is created exclusively; both writes are durable."""
        folder = self.trimap_dir(name)
        stem = self.frame_stem(name, stem)
        labels = snap_trimap(self.read_upload(name, stem, data, "trimap"))
        try:
            folder.mkdir(exist_ok=True)  # a video clip's first keyframe
        except OSError as exc:
            raise ViewError(409, f"the trimap folder of {name} ({folder.name}) cannot be made ({exc.strerror}); "
                                 "remove what is there under that name") from None  # fmt: skip
        if self.workspace not in folder.resolve().parents:
            raise ViewError(
                403, f"the trimap folder of {name} leads outside the workspace; the app writes only inside it"
            )
        path = folder / f"{stem}{TRIMAP_SUFFIX}"
        backup = path.with_name(path.name[: -len(".png")] + BACKUP_SUFFIX)
        if len(backup.name.encode()) > 255:
            raise ViewError(
                400, f"frame {stem[:40]}...'s name is too long for its trimap's file name ({len(backup.name.encode())}"
                " bytes; a file name ends at 255): rename the clip's frames shorter",
            )  # fmt: skip
        with self._save_lock(path):
            if path.is_symlink() or (path.exists() and not path.is_file()):
                raise ViewError(409, f"the trimap of frame {stem} ({path.name}) is a link or not a file; the app "
                                     "replaces only a file it can keep a copy of: remove it, then save")  # fmt: skip
            if path.exists():  # the trimap as it was, the first time it is replaced
                try:
                    previous = read_regular(path, f"the trimap of frame {stem}", MAX_SMALL_FILE)
                except UserError as exc:
                    raise ViewError(409, str(exc)) from None
                create_exclusive(backup, previous)
            atomic_write_png(path, encode_labels(labels), durable=True)
        counts = [int((labels == c).sum()) for c in range(3)]
        log.info("saved %s (background %d, unknown %d, foreground %d px)", path, *counts)
        return {"saved": f"{name}/{path.name}", "backup": backup.name if backup.exists() else None, "pixels": counts}

    def trimap_from_mask(self, name: str, stem: str, data: bytes, band_per_side: int) -> bytes:
        """A trimap (PNG bytes) from an uploaded mask: ``band_per_side`` px of unknown on each side
        of its edge, as ``tgm.py trimap from-mask``."""
        stem = self.frame_stem(name, stem)
        if not 0 <= band_per_side <= MAX_BAND:
            raise ViewError(400, f"width must be between 0 and {MAX_BAND} pixels")
        grey = self.read_upload(name, stem, data, "mask")
        mask = binarise(grey.astype(np.float32) / 255.0, None)  # the rule of tgm.py trimap from-mask
        return encode_png(encode_labels(mask_to_trimap(mask, band_per_side, band_per_side)))
