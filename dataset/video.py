"""Video files: decoding frames frame-accurately (a clip may be a video), extracting them as PNGs,
and writing image sequences as videos (with alpha where the codec has it).

Frames are decoded with PyAV (FFmpeg in its wheels). Frame ``i`` is the ``i``-th frame in
presentation order, found by its timestamp: the timestamps of every frame are read once from the
container (demuxing, no decoding), and reading frame ``i`` seeks to the keyframe before it and
decodes forward. ``tgm.py extract`` and a video clip decode through the same code, so frame ``i``
of a video clip is byte for byte the PNG ``extract`` writes for it, and results computed from
either carry the same file names (``frame_stem``).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError
from utils.io import atomic_write_png, atomic_write_text, file_digest_once, read_regular
from utils.logs import progress

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".m4v", ".webm")
FRAME_SUFFIX = "_rgb.png"  # as dataset.clip spells it (clip imports this module)
DEFAULT_FPS = 25.0  # for image sequences that do not come with a frame rate
SEEK_AHEAD = 32  # decode forward rather than seek when the wanted frame is at most this far ahead
DEFAULT_CACHE_MIB = 1024  # decoded frames kept in RAM ...
DEFAULT_SPILL_MIB = 8192  # ... and then in a temporary folder


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def stem_digits(frame_count: int | None) -> int:
    """Digits of the zero-padded frame stems: enough for the last frame index, so that sorted file
    names stay in frame order (at least 5; 8 when the video does not say how long it is)."""
    if not frame_count:
        return 8
    return max(5, len(str(frame_count - 1)))


def frame_stem(index: int, digits: int) -> str:
    """The stem of the video's frame ``index`` (its place in the video, not among the kept frames)."""
    return f"{index:0{digits}d}"


def resize_to_max_edge(frame: np.ndarray, max_edge: int) -> np.ndarray:
    """Downscale (area filter) so that the longer edge is at most ``max_edge``; 0 keeps the size."""
    height, width = frame.shape[:2]
    scale = max_edge / max(height, width) if max_edge else 1.0
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _av():
    import av  # imported where used: reading PNG clips needs no FFmpeg

    return av


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: frame count and size (as displayed, rotation applied), frame rate,
    and the timestamp of every frame in presentation order (``pts``; empty if the container has none)."""

    path: Path
    frame_count: int
    width: int
    height: int
    fps: Fraction
    pts: tuple[int, ...]
    rotation: int = 0  # degrees counter-clockwise the frames are turned to be shown upright

    @property
    def stems(self) -> list[str]:
        digits = stem_digits(self.frame_count)
        return [frame_stem(i, digits) for i in range(self.frame_count)]

    def digest(self) -> str:
        """sha256 of the file, computed once per file version."""
        return file_digest_once(self.path)


# The containers read, by FFmpeg's demuxer names: a file is probed by its content, and some formats
# FFmpeg knows (concat lists, playlists, image sequences) would open other files than the one given.
VIDEO_DEMUXERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"


def _open_container(path: Path):
    av = _av()
    if not path.exists():
        raise UserError(f"{path} does not exist; give the path of a video file or a folder of frames")
    if not path.is_file():
        raise UserError(f"{path} is not a regular file (a folder, a FIFO or a device); give a video file")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): a copy or download that did not finish? Copy the video again.")
    try:
        container = av.open(str(path), container_options={"format_whitelist": VIDEO_DEMUXERS,
                                                          "protocol_whitelist": "file"})  # fmt: skip
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise UserError(
            f"{path} is not a video that can be read (MP4/MOV, Matroska/WebM or AVI): {_ffmpeg_reason(exc)}. "
            "Is it a video file at all, and "
            "complete? A copy or download cut short loses the index an .mp4 or .mov keeps at its end: copy it "
            "again, or check that it plays in a video player; a file that plays can be re-encoded "
            "(ffmpeg -i IN -c:v libx264 -crf 17 OUT.mp4) and used instead."
        ) from exc
    if not container.streams.video:
        container.close()
        raise UserError(f"{path} holds no video stream (audio only?); give a video file or a folder of frames")
    return container


def _ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's words without its error number ("[Errno 1094995529] Invalid data ..." -> "invalid data ...")."""
    reason = getattr(exc, "strerror", None) or str(exc)
    reason = str(reason).split(":")[0] if "[Errno" in str(reason) else str(reason)
    return reason.strip().rstrip(".").lower() or "FFmpeg could not open it"


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's frame timestamps and size without decoding more than one frame."""
    path = Path(path)
    av = _av()
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        try:
            stamps = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
            counted = None
        except av.FFmpegError as exc:
            raise UserError(f"{path} is damaged ({exc}); re-encode it or extract what can be read") from exc
        shared = len(stamps) - len(set(stamps))
        if shared:  # a frame cannot be found by a timestamp others share: count and read them in order
            _say_once(
                path,
                f"{path.name}: {shared} of its frames share a timestamp with another; its frames are numbered in "
                "the order they decode, and reading one far back decodes from the start (tgm.py extract to PNGs "
                "is faster for a long clip like this)",
            )
            stamps = []
        if not stamps:  # no usable timestamps: frames can only be counted by decoding
            container.seek(0)
            counted = sum(1 for _ in container.decode(stream))
        container.seek(0)
        first = next(container.decode(stream), None)
        if first is None:
            raise UserError(f"{path}: no frame could be decoded; is the file complete?")
        rotation = int(getattr(first, "rotation", 0) or 0) % 360
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        if any(component.is_alpha for component in first.format.components):
            _say_once(path, f"{path.name}: its alpha channel is ignored (trimaps are made from the colour channels)")
        pts = tuple(sorted(stamps))  # distinct: shared timestamps were cleared above
        count = len(pts) if counted is None else counted
    finally:
        container.close()
    return VideoInfo(path, count, width, height, Fraction(fps), pts, rotation)


_said: set[tuple[Path, str]] = set()


def _say_once(path: Path, message: str) -> None:
    """Log a remark about a video once per process (a clip is probed by several steps of a run)."""
    if (path, message) not in _said:
        _said.add((path, message))
        log.warning("%s", message)


UNSPECIFIED = 2  # FFmpeg's AVCOL_SPC_UNSPECIFIED: a stream without a colour matrix tag
FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def upright(frame, rotation: int) -> np.ndarray:
    """A decoded PyAV frame as H x W x 3 uint8 RGB, turned as the video says it is to be shown.

    YUV is converted by the frame's own tags (matrix and range); a frame without a matrix tag is
    BT.709 from 720 lines on and BT.601 below, as editors and browsers take it. Rounding is exact
    (swscale's accurate rounding and full chroma interpolation: 10-bit white stays 255)."""
    from av.video.reformatter import Interpolation

    options = {"interpolation": Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT}
    if frame.format.name.startswith(("yuv", "nv")) and frame.colorspace == UNSPECIFIED and frame.height >= HD_LINES:
        full = frame.color_range == FULL_RANGE or frame.format.name.startswith("yuvj")
        options |= {
            "src_colorspace": "ITU709",
            "src_color_range": "JPEG" if full else "MPEG",
            "dst_color_range": "JPEG",
        }
    rgb = frame.to_ndarray(format="rgb24", **options)
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, rotation // 90))
    return rgb


class FrameCache:
    """Decoded frames by index, the least recently used dropped first: up to ``ram_bytes`` in RAM,
    then as raw files in a temporary folder up to ``spill_bytes``; beyond both a frame is dropped
    and decoded again if it is asked for. The folder is removed by :meth:`close`.

    The backward passes read a segment in reverse right after the forward pass read it in order:
    with a budget that holds a segment, every frame of a segment is decoded once.
    """

    def __init__(self, ram_bytes: int, spill_bytes: int = 0, spill_root: Path | None = None) -> None:
        self.ram_bytes, self.spill_bytes, self.spill_root = ram_bytes, spill_bytes, spill_root
        self._ram: OrderedDict[int, np.ndarray] = OrderedDict()
        self._spilled: OrderedDict[int, tuple[Path, tuple[int, ...]]] = OrderedDict()
        self._folder: Path | None = None
        self.ram_held = self.spill_held = 0
        self.peak_ram = self.peak_spill = 0

    def get(self, index: int) -> np.ndarray | None:
        if index in self._ram:
            self._ram.move_to_end(index)
            return self._ram[index]
        if index in self._spilled:
            path, shape = self._spilled.pop(index)
            frame = np.fromfile(path, np.uint8).reshape(shape)
            path.unlink()
            self.spill_held -= frame.nbytes
            self.put(index, frame)
            return frame
        return None

    def put(self, index: int, frame: np.ndarray) -> None:
        if index in self._ram or frame.nbytes > self.ram_bytes:
            return
        self._ram[index] = frame
        self.ram_held += frame.nbytes
        while self.ram_held > self.ram_bytes:
            old_index, old = self._ram.popitem(last=False)
            self.ram_held -= old.nbytes
            self._spill(old_index, old)
        self.peak_ram = max(self.peak_ram, self.ram_held)

    def _spill(self, index: int, frame: np.ndarray) -> None:
        if frame.nbytes > self.spill_bytes:
            return
        while self._spilled and self.spill_held + frame.nbytes > self.spill_bytes:
            _, (path, shape) = self._spilled.popitem(last=False)
            path.unlink()
            self.spill_held -= int(np.prod(shape))
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="tgm-frames-", dir=self.spill_root))
        path = self._folder / f"{index}.raw"
        frame.tofile(path)
        self._spilled[index] = (path, frame.shape)
        self.spill_held += frame.nbytes
        self.peak_spill = max(self.peak_spill, self.spill_held)

    def drop(self, index: int) -> None:
        """Forget frame ``index`` (it will not be asked for again)."""
        frame = self._ram.pop(index, None)
        if frame is not None:
            self.ram_held -= frame.nbytes
        spilled = self._spilled.pop(index, None)
        if spilled is not None:
            spilled[0].unlink()
            self.spill_held -= int(np.prod(spilled[1]))

    def close(self) -> None:
        self._ram.clear()
        self._spilled.clear()
        self.ram_held = self.spill_held = 0
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


class VideoFrames:
    """A video file as a clip's ``FrameSource``: frame ``i`` decoded on demand (thread-safe), with a
    :class:`FrameCache`. ``decoded``: how many frames were decoded so far."""

    def __init__(self, info: VideoInfo, cache: FrameCache | None = None) -> None:
        self.info = info
        self.cache = cache if cache is not None else FrameCache(DEFAULT_CACHE_MIB << 20, DEFAULT_SPILL_MIB << 20)
        self._lock = threading.Lock()
        self._container = None
        self._frames = None  # the decoder's frame iterator
        self._next: int | None = None  # the index the decoder yields next
        self._index_of = {stamp: i for i, stamp in enumerate(info.pts)}
        self._forgotten: set[int] = set()  # frames whose visits are over: decoded on the way, not kept
        self.decoded = 0

    def __len__(self) -> int:
        return self.info.frame_count

    def __getstate__(self) -> dict:  # for worker processes: the file and the budget, no decoder state
        return {"info": self.info, "budget": (self.cache.ram_bytes, self.cache.spill_bytes, self.cache.spill_root)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["info"], FrameCache(*state["budget"]))

    def digest(self, index: int) -> str:
        """What frame ``index`` is made of: the video file's content and the frame's place in it."""
        return hashlib.sha256(f"{self.info.digest()}:{index}".encode()).hexdigest()

    def read_rgb(self, index: int) -> np.ndarray:
        """Frame ``index`` as H x W x 3 uint8 RGB (shown upright)."""
        if not 0 <= index < self.info.frame_count:
            raise IndexError(f"{self.info.path} has {self.info.frame_count} frames, not {index + 1}")
        with self._lock:
            frame = self.cache.get(index)
            if frame is not None:
                return frame
            if self._next is None or not self._next <= index <= self._next + SEEK_AHEAD:
                self._seek(index)
            return self._decode_up_to(index)

    def _seek(self, index: int) -> None:
        stream = self._stream()
        if self.info.pts:
            self._container.seek(self.info.pts[index], stream=stream, backward=True, any_frame=False)
            self._next = None  # known from the first frame's timestamp
        else:
            self._container.seek(0)
            self._next = 0
        self._frames = self._container.decode(stream)

    def _stream(self):
        if self._container is None:
            self._container = _open_container(self.info.path)
        return self._container.streams.video[0]

    def _decode_up_to(self, index: int) -> np.ndarray:
        av = _av()
        while True:
            try:
                frame = next(self._frames)
            except (StopIteration, av.FFmpegError) as exc:
                self._next = None
                raise UserError(
                    f"{self.info.path}: frame {index} could not be decoded ({exc or 'the file ends early'}); "
                    "is the file complete?"
                ) from exc
            if self.info.pts and frame.pts is not None:
                found = self._index_of.get(frame.pts)
                if found is None:  # between timestamps (should not happen): the nearest frame before
                    found = max(0, bisect.bisect_right(self.info.pts, frame.pts) - 1)
            elif self._next is not None:
                found = self._next
            else:
                raise UserError(
                    f"{self.info.path}: a frame without a timestamp after seeking; convert the video to "
                    "frames with tgm.py extract and use the folder"
                )
            self._next = found + 1
            if found in self._forgotten and found != index:
                continue  # passed on the way from a keyframe, no longer needed: not even converted
            # Every other frame decoded on the way is kept: reading backwards, they are the next ones asked for.
            rgb = upright(frame, self.info.rotation)
            self.decoded += 1
            if found not in self._forgotten:
                self.cache.put(found, rgb)
            if found >= index:
                if found > index:
                    raise UserError(f"{self.info.path}: frame {index} is missing from the decoded stream")
                return rgb

    def forget(self, indices: Iterable[int]) -> None:
        """Drop these frames from the cache and keep them out of it: their visits are over (memory
        stays flat in the clip's length; a frame asked for again is decoded again)."""
        with self._lock:
            for index in indices:
                self.cache.drop(index)
                self._forgotten.add(index)

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container = self._frames = self._next = None
            self.cache.close()


def decode_all(path: Path) -> Iterable[tuple[int, np.ndarray]]:
    """Every frame of a video in order: (index, H x W x 3 uint8 RGB), decoded once, sequentially."""
    info = probe_video(path)
    container = _open_container(path)
    index_of = {stamp: i for i, stamp in enumerate(info.pts)}
    try:
        for position, frame in enumerate(container.decode(container.streams.video[0])):
            yield index_of.get(frame.pts, position) if info.pts else position, upright(frame, info.rotation)
    finally:
        container.close()


# --- extracting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Extraction:
    every: int = 1
    max_edge: int = 0
    start: int = 0
    count: int = 0  # 0: all

    def check(self) -> None:
        if self.every < 1 or self.max_edge < 0 or self.start < 0 or self.count < 0:
            raise UserError("--every must be >= 1 and --max_edge, --start, --count >= 0")


def extract_frames(video: Path, out: Path, settings: Extraction) -> tuple[int, float]:
    """Write every ``settings.every``-th frame of ``video`` as ``out/<index>_rgb.png``; returns
    (frames written, the video's frame rate). Refuses an ``out`` that already holds frames."""
    settings.check()
    if not video.is_file():
        raise UserError(f"{video} does not exist")
    if out.is_dir() and any(p.name.endswith(FRAME_SUFFIX) for p in out.iterdir()):
        raise UserError(f"--out {out} already holds frames; extract into a new folder (nothing is overwritten)")
    info = probe_video(video)
    expected = max(0, (info.frame_count - settings.start + settings.every - 1) // settings.every)
    if settings.count:
        expected = min(expected, settings.count)
    digits = stem_digits(info.frame_count)
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with progress(total=expected, desc=f"extract {video.name}", unit="frame") as bar:
        for index, rgb in decode_all(video):
            if index >= settings.start and (index - settings.start) % settings.every == 0:
                image = resize_to_max_edge(rgb[..., ::-1], settings.max_edge)  # PNGs are written from BGR
                atomic_write_png(out / f"{frame_stem(index, digits)}{FRAME_SUFFIX}", image)
                written += 1
                bar.update(1)
                if settings.count and written >= settings.count:
                    break
    if not written:
        raise UserError(f"{video}: no frames read (after --start {settings.start}); is the file complete?")
    record = {"video": str(video.resolve()), "fps": float(info.fps), "start": settings.start, "every": settings.every,
              "frames": written}  # fmt: skip
    atomic_write_text(out / SOURCE_RECORD, json.dumps(record, indent=1) + "\n")
    return written, float(info.fps)


SOURCE_RECORD = "source.json"  # beside extracted frames: the video, its frame rate, which frames


def source_fps(folder: Path) -> float | None:
    """The frame rate of the video a clip folder was extracted from (its ``source.json``), or None."""
    try:  # a small regular file: never through a link, never waiting on a FIFO
        fps = float(json.loads(read_regular(Path(folder) / SOURCE_RECORD, SOURCE_RECORD, 1 << 16))["fps"])
    except (OSError, UserError, ValueError, KeyError, TypeError, RecursionError):
        return None
    return fps if fps > 0 else None


# --- writing ----------------------------------------------------------------------------------

# By container: (codec, pixel format without alpha, with alpha). ProRes 4444 (.mov) keeps alpha
# losslessly; FFV1 (.mkv) is lossless for both; H.264 (.mp4) and MPEG-4 (.avi) have no alpha.
# Colours: the YUV codecs convert RGB with the BT.709 matrix into limited range and tag the stream
# so (BT.709 primaries, transfer and matrix: an editor or browser that follows the tags, or assumes
# BT.709 for HD, shows the images' colours); .avi can carry no tags, so there the matrix is what a
# decoder assumes for the frame size: BT.709 from 720 lines on, BT.601 below. FFV1 keeps RGB as it is.
WRITERS = {
    ".mp4": ("libx264", "yuv420p", None),
    ".m4v": ("libx264", "yuv420p", None),
    ".avi": ("mpeg4", "yuv420p", None),
    ".mov": ("prores_ks", "yuv422p10le", "yuva444p10le"),
    ".mkv": ("ffv1", "bgr0", "bgra"),
}
TAGGED_CODECS = ("libx264", "prores_ks")  # their streams carry colour tags; mpeg4 in .avi does not
BT709 = 1  # FFmpeg's AVCOL_PRI_BT709 = AVCOL_TRC_BT709 = AVCOL_SPC_BT709
LIMITED_RANGE = 1  # AVCOL_RANGE_MPEG: 16-235 (10-bit: 64-940), what video carries
HD_LINES = 720


def colour_matrix(codec: str, height: int) -> str | None:
    """The matrix ``write_video`` converts RGB with for ``codec`` at ``height`` lines (None: RGB kept)."""
    if codec == "ffv1":
        return None
    return "ITU709" if codec in TAGGED_CODECS or height >= HD_LINES else "ITU601"


def write_video(
    path: Path,
    images: Iterable[np.ndarray],
    fps: float | Fraction,
    frame_numbers: Iterable[int] | None = None,
    total: int | None = None,
) -> int:
    """Write RGB (H x W x 3) or RGBA (H x W x 4) uint8 frames to ``path`` through a temporary file.

    The codec follows the file type (``WRITERS``): RGBA frames keep their alpha in ``.mov``
    (ProRes 4444) and ``.mkv`` (FFV1), and are refused for containers without alpha.
    ``frame_numbers``: each frame's number in the source (its stem), kept as its timestamp at
    ``fps``, so that a video of every other frame still shows each at its time. Returns the count.
    """
    av = _av()
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise UserError(f"{path}: write the video as one of {', '.join(WRITERS)}")
    codec, plain_format, alpha_format = WRITERS[suffix]
    rate = Fraction(fps).limit_denominator(1001000)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    numbers = iter(frame_numbers) if frame_numbers is not None else None
    count, first_number, last_pts = 0, None, -1
    container = stream = None
    try:
        for image in progress(images, total=total, desc=path.name, unit="frame"):
            if stream is None:
                has_alpha = image.ndim == 3 and image.shape[2] == 4
                if has_alpha and alpha_format is None:
                    raise UserError(
                        f"{path}: {suffix} videos have no alpha channel; write a .mov (ProRes 4444) or .mkv (FFV1)"
                    )
                container = av.open(str(tmp), "w")
                stream = container.add_stream(codec, rate=rate)  # timestamps count frames at this rate
                height, width = image.shape[:2]
                even = codec in ("libx264", "mpeg4")  # 4:2:0 needs even sides: pad by a pixel
                stream.width, stream.height = width + (width % 2 if even else 0), height + (height % 2 if even else 0)
                stream.pix_fmt = alpha_format if has_alpha else plain_format
                if codec == "libx264":
                    stream.options = {"crf": "17", "preset": "medium"}
                elif codec == "prores_ks":
                    stream.options = {"profile": "4" if has_alpha else "3"}  # 4444 / 422 HQ
                    # Slice threads of prores_ks corrupt rows of the alpha plane when the height is not a
                    # multiple of 16 (1080p is not): seen with PyAV 18.1's FFmpeg, test_video.py catches it.
                    stream.codec_context.thread_count = 1
                elif codec == "ffv1":
                    stream.codec_context.thread_count = 1  # lossless must mean the same bytes: no slice races
                layout = "rgba" if has_alpha else "rgb24"
                matrix = colour_matrix(codec, height)
                tagged = codec in TAGGED_CODECS
                if tagged:  # set before the first frame: the codec opens with them
                    context = stream.codec_context
                    context.colorspace = context.color_primaries = context.color_trc = BT709
                    context.color_range = LIMITED_RANGE
            frame_image = _pad_even(image, stream.width, stream.height)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_image), format=layout)
            if matrix is not None:  # our conversion, not swscale's default (BT.601)
                frame = frame.reformat(format=stream.pix_fmt, dst_colorspace=matrix, dst_color_range="MPEG")
                if tagged:  # ProRes copies the frame's tags into each frame header
                    frame.colorspace = frame.color_primaries = frame.color_trc = BT709
                    frame.color_range = LIMITED_RANGE
            number = next(numbers) if numbers is not None else count
            first_number = number if first_number is None else first_number
            frame.pts = max(number - first_number, last_pts + 1)
            last_pts = frame.pts
            container.mux(stream.encode(frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode())
    except av.FFmpegError as exc:
        raise UserError(f"{path}: the video could not be written ({exc})") from exc
    finally:
        if container is not None:
            container.close()
    if count == 0:
        tmp.unlink(missing_ok=True)
        raise UserError(f"no frames to write to {path}")
    tmp.replace(path)
    return count


def frame_numbers(stems: list[str]) -> list[int] | None:
    """The stems as frame numbers when they all are numbers, increasing (else None: one after another)."""
    if not all(stem.isdigit() for stem in stems):
        return None
    numbers = [int(stem) for stem in stems]
    return numbers if all(b > a for a, b in zip(numbers, numbers[1:])) else None


def _pad_even(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[0] == height and image.shape[1] == width:
        return image
    return cv2.copyMakeBorder(image, 0, height - image.shape[0], 0, width - image.shape[1], cv2.BORDER_REPLICATE)
