"""Video files as users have them: each is a clip with one trimap per decodable frame, or refused with one
paragraph that names the file and says what to do."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from dataset.clip import open_clip_frames
from dataset.synthetic import make_synthetic_clip
from dataset.video import Extraction, FrameCache, VideoFrames, extract_frames, probe_video, write_video
from helpers import run_main, write_cfg
from utils.errors import UserError
from utils.images import read_rgb

SHARED_PTS = [0, 1, 2, 2, 3, 4, 5, 5, 6, 7, 7, 8]  # 12 frames, 9 distinct timestamps


def noisy_frames(count: int, size: tuple[int, int] = (40, 64), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


PATCHES = np.array([[200, 40, 40], [40, 160, 60], [50, 60, 190], [128, 128, 128]], np.uint8)


def patch_frames(count: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """Frames of four flat colour patches (quadrants), rolled a little per frame: colours a lossy
    codec keeps, so that what comes back can be compared with what went in."""
    height, width = size
    image = np.zeros((*size, 3), np.uint8)
    for k, colour in enumerate(PATCHES):
        image[(k // 2) * height // 2 : (k // 2 + 1) * height // 2, (k % 2) * width // 2 : (k % 2 + 1) * width // 2] = (
            colour
        )
    return [np.roll(image, index % 3, axis=1) for index in range(count)]


def patch_colours(image: np.ndarray) -> np.ndarray:
    """The mean colour of each quadrant's middle (away from the edges, where chroma is shared)."""
    height, width = image.shape[:2]
    middles = []
    for k in range(4):
        top, left = (k // 2) * height // 2, (k % 2) * width // 2
        middles.append(image[top + height // 8 : top + 3 * height // 8, left + width // 8 : left + 3 * width // 8]
                       .reshape(-1, 3).mean(0))  # fmt: skip
    return np.array(middles)


def encode(path: Path, frames: list[np.ndarray], codec: str, pix_fmt: str, pts: list[int] | None = None,
           audio: bool = False, layout: str = "rgb24", options: dict | None = None) -> Path:  # fmt: skip
    """A video written frame by frame with the given timestamps (in 1/25 s), as other tools make them."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=25)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    stream.codec_context.time_base = Fraction(1, 25)
    stream.codec_context.thread_count = 1
    if options:
        stream.options = options
    sound = container.add_stream("aac", rate=16000) if audio else None
    for index, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(image, format=layout)
        frame.pts = index if pts is None else pts[index]
        container.mux(stream.encode(frame))
        if sound is not None:
            samples = av.AudioFrame.from_ndarray(np.zeros((1, 640), np.float32), format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 16000, index * 640
            container.mux(sound.encode(samples))
    container.mux(stream.encode())
    if sound is not None:
        container.mux(sound.encode())
    container.close()
    return path


@pytest.mark.unit
def test_frames_that_share_a_timestamp_are_all_frames_of_the_clip(tmp_path, caplog):
    """A file whose frames repeat timestamps (0, 1, 2, 2, 3, ...) once became a clip of its distinct
    timestamps only (9 of 12 frames), without a word."""
    frames = noisy_frames(len(SHARED_PTS))
    video = encode(tmp_path / "shared.mkv", frames, "ffv1", "bgr0", pts=SHARED_PTS)
    with caplog.at_level(logging.WARNING):
        info = probe_video(video)
        assert probe_video(video).frame_count == 12  # probed again by another step of a run: said once
    assert info.frame_count == 12
    assert caplog.text.count("3 of its frames share a timestamp") == 1
    reader = VideoFrames(info, FrameCache(0))  # no cache: every read decodes, backwards too
    for index in (3, 2, 11, 0, 7, 6, 10, 9, 1):
        assert np.array_equal(reader.read_rgb(index), frames[index]), index
    reader.close()
    written, _ = extract_frames(video, tmp_path / "frames", Extraction())
    assert written == 12
    assert all(np.array_equal(read_rgb(tmp_path / "frames" / f"{i:05d}_rgb.png"), frames[i]) for i in range(12))


@pytest.mark.e2e
def test_a_clip_with_shared_timestamps_gets_a_trimap_for_every_frame(tmp_path, parity_weights):
    sample = make_synthetic_clip(tmp_path / "ws", "clip", 12, (48, 64), keyframes=(0,), seed=4)
    frames = [read_rgb(path) for path in sorted(sample.folder.glob("*_rgb.png"))]
    (tmp_path / "videos" / "walk_trimaps").mkdir(parents=True)
    video = encode(tmp_path / "videos" / "walk.mkv", frames, "ffv1", "bgr0", pts=SHARED_PTS)
    (sample.folder / "00000_trimap.png").rename(tmp_path / "videos" / "walk_trimaps" / "00000_trimap.png")
    cfg = write_cfg(tmp_path / "walk.yaml", video)
    run = run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    fused = run_main("ensemble.py", "--predroot", tmp_path / "out", "--dataroot", tmp_path / "videos")
    assert fused.returncode == 0, fused.stderr
    trimaps = sorted(p.name for p in (tmp_path / "out" / "walk_mem5" / "ensemble").glob("*_trimap.png"))
    assert trimaps == [f"{i:05d}_trimap.png" for i in range(12)]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "is empty (0 bytes)"),
        (b"this is a text file, not a video\n" * 20, "is not a video that can be read (MP4/MOV, Matroska/WebM or AVI)"),
    ],
    ids=["empty", "text"],
)
def test_a_file_that_is_no_video_is_refused_with_what_to_do(tmp_path, content, words):
    path = tmp_path / "holiday.mp4"
    path.write_bytes(content)
    with pytest.raises(UserError) as refused:
        probe_video(path)
    message = str(refused.value)
    assert str(path) in message and words in message and "again" in message
    assert "[Errno" not in message


@pytest.mark.unit
def test_an_mp4_cut_short_is_refused_with_what_to_do(tmp_path):
    frames = noisy_frames(24, (48, 64))
    whole = tmp_path / "whole.mp4"
    write_video(whole, frames, 25)  # H.264, its index (moov) at the end
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(UserError) as refused:
        probe_video(cut)
    assert str(cut) in str(refused.value) and "cut short" in str(refused.value)
    # the same with its index at the start (faststart): FFmpeg finds the data cut short and
    # refuses the file too (the index promises frames that are not there)
    early = encode(tmp_path / "early.mp4", frames, "libx264", "yuv420p", options={"movflags": "+faststart"})
    cut_early = tmp_path / "cut_early.mp4"
    cut_early.write_bytes(early.read_bytes()[: early.stat().st_size // 2])
    with pytest.raises(UserError) as refused:
        probe_video(cut_early)
    assert str(cut_early) in str(refused.value) and "cut short" in str(refused.value)


@pytest.mark.unit
def test_an_alpha_channel_is_ignored_and_said_once(tmp_path, caplog):
    frames = patch_frames(4, (32, 48))
    rgba = [np.dstack([f, np.full(f.shape[:2], 128, np.uint8)]) for f in frames]
    video = tmp_path / "cutout.mov"
    write_video(video, rgba, 25)  # ProRes 4444 with alpha
    with caplog.at_level(logging.WARNING):
        info = probe_video(video)
        probe_video(video)
    assert caplog.text.count("its alpha channel is ignored") == 1
    reader = VideoFrames(info, FrameCache(0))
    image = reader.read_rgb(3)
    assert image.shape == (32, 48, 3)
    assert np.abs(patch_colours(image) - patch_colours(frames[3])).max() <= 3, "the colour, not the alpha"
    reader.close()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "size"),
    [
        ("odd.mkv", "ffv1", "bgr0", (41, 63)),
        ("ten_bit.mp4", "libx264", "yuv420p10le", (48, 64)),
        ("ten_bit_hevc.mp4", "libx265", "yuv420p10le", (48, 64)),
    ],
    ids=["odd-size", "10-bit-h264", "10-bit-hevc"],
)
def test_odd_sizes_and_10_bit_videos_are_clips_of_every_frame(tmp_path, name, codec, pix_fmt, size):
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV has no {codec} encoder to make the test video")
    frames = noisy_frames(10, size) if codec == "ffv1" else patch_frames(10, size)  # lossless: any content
    video = encode(tmp_path / name, frames, codec, pix_fmt)
    info = probe_video(video)
    assert (info.frame_count, info.height, info.width) == (10, *size)
    reader = VideoFrames(info, FrameCache(0))
    for index in (9, 0, 5):
        image = reader.read_rgb(index)
        assert image.shape == (*size, 3) and image.dtype == np.uint8
        if codec == "ffv1":
            assert np.array_equal(image, frames[index])
        else:  # 10 bits scaled to 8 and converted back to RGB: the patches' colours within a few levels
            difference = np.abs(patch_colours(image) - patch_colours(frames[index])).max()
            assert difference <= 4, (index, difference)
    reader.close()


@pytest.mark.unit
def test_an_audio_track_and_a_variable_frame_rate_leave_every_frame(tmp_path):
    frames = noisy_frames(9)
    variable = [0, 1, 2, 4, 5, 8, 9, 10, 14]  # gaps: a phone's variable frame rate
    video = encode(tmp_path / "phone.mkv", frames, "ffv1", "bgr0", pts=variable, audio=True)
    info = probe_video(video)
    assert info.frame_count == 9
    reader = VideoFrames(info, FrameCache(0))
    for index in (8, 3, 0, 5):
        assert np.array_equal(reader.read_rgb(index), frames[index]), index
    reader.close()
    assert open_clip_frames(video).stems == [f"{i:05d}" for i in range(9)]


@pytest.mark.unit
def test_a_list_of_other_files_named_like_a_video_is_not_read(tmp_path):
    # FFmpeg opens a file by its content: a concat list named .mp4 would read the videos it names,
    # wherever they are (outside the app's workspace, say)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_video(elsewhere / "private.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2, 10)
    listed = tmp_path / "ws" / "holiday.mp4"
    listed.parent.mkdir()
    listed.write_text(f"ffconcat version 1.0\nfile {elsewhere / 'private.mp4'}\n")
    with pytest.raises(UserError, match=r"holiday\.mp4 is not a video that can be read \(MP4/MOV"):
        probe_video(listed)
