"""Video files as clips (decoded frame-accurately, cached within a budget), the internal working
size, fusing as the parts finish (--discard_parts), videos out with alpha, and one-sided trimaps
in matting (the subject has left the frame)."""

from __future__ import annotations

import filecmp
import json
import shutil
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

import inference.driver as driver
from dataset.clip import open_clip_frames, scan_clip
from dataset.prepare import internal_size, resize_labels
from dataset.synthetic import make_synthetic_clip
from dataset.trimap import BACKGROUND, FOREGROUND, UNKNOWN, decode_trimap
from dataset.video import (
    Extraction,
    FrameCache,
    VideoFrames,
    extract_frames,
    frame_numbers,
    probe_video,
    write_video,
)
from helpers import run_main, write_cfg
from inference.options import PropagationOptions
from inference.propagator import probs_to_image
from pipeline.clip import run_clip
from utils.errors import UserError
from utils.images import read_image, read_rgb
from utils.io import atomic_write_png

CPU = torch.device("cpu")


def source_frames(count: int = 12, size: tuple[int, int] = (40, 64), seed: int = 0) -> list[np.ndarray]:
    """Noisy RGB frames: any rounding or a frame off by one shows."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def smooth_frames(count: int = 12, size: tuple[int, int] = (48, 80)) -> list[np.ndarray]:
    """Frames a lossy codec keeps well (a moving gradient with a disc): frames differ from each other."""
    yy, xx = np.mgrid[: size[0], : size[1]].astype(np.float32)
    frames = []
    for t in range(count):
        disc = np.hypot(yy - size[0] / 2, xx - 10 - 4 * t) < 9
        rgb = np.dstack([xx * 2 + 10 * t, yy * 3, 120 + 80 * disc]).clip(0, 255)
        frames.append(rgb.astype(np.uint8))
    return frames


def video_of(frames: list[np.ndarray], path: Path, fps: float = 25) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps)
    return path


# --- reading ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_a_lossless_video_reads_back_every_frame_byte_for_byte_in_any_order(tmp_path):
    frames = source_frames()
    video = video_of(frames, tmp_path / "clip.mkv")  # FFV1: lossless
    info = probe_video(video)
    assert (info.frame_count, info.width, info.height, float(info.fps)) == (12, 64, 40, 25.0)
    reader = VideoFrames(info, FrameCache(0))  # no cache: every read decodes (seeks backwards too)
    for index in (5, 0, 11, 3, 3, 10, 1):
        assert np.array_equal(reader.read_rgb(index), frames[index]), index
    reader.close()


@pytest.mark.unit
def test_a_lossy_video_clip_has_the_frames_extract_writes_under_the_same_stems(tmp_path):
    frames = smooth_frames()
    video = video_of(frames, tmp_path / "clip.mp4")  # H.264, 4:2:0: lossy
    written, fps = extract_frames(video, tmp_path / "extracted", Extraction())
    assert (written, fps) == (12, 25.0)
    (tmp_path / "clip_trimaps").mkdir()
    atomic_write_png(tmp_path / "clip_trimaps" / "00000_trimap.png", np.full((48, 80), 128, np.uint8))
    clip = scan_clip(video)
    assert (tmp_path / "extracted" / "source.json").is_file()
    extracted = sorted(p.name[:5] for p in (tmp_path / "extracted").glob("*_rgb.png"))
    assert clip.name == "clip" and clip.stems == extracted
    for index in (7, 0, 11, 6):
        extracted = read_rgb(tmp_path / "extracted" / f"{clip.stems[index]}_rgb.png")
        assert np.array_equal(clip.read_frame(index), extracted), index
        assert np.abs(extracted.astype(int) - frames[index]).mean() < 3  # and close to the source
    clip.close()


@pytest.mark.unit
def test_reading_a_segment_backwards_after_forwards_decodes_each_frame_once(tmp_path):
    frames = source_frames(30)
    reader = VideoFrames(probe_video(video_of(frames, tmp_path / "clip.mkv")), FrameCache(64 << 20))
    for index in [*range(30), *range(29, -1, -1)]:
        assert np.array_equal(reader.read_rgb(index), frames[index])
    assert reader.decoded == 30
    reader.close()


@pytest.mark.unit
def test_the_frame_cache_spills_to_a_temporary_folder_within_its_budgets(tmp_path):
    frame_bytes = 40 * 64 * 3
    cache = FrameCache(ram_bytes=3 * frame_bytes, spill_bytes=4 * frame_bytes, spill_root=tmp_path)
    frames = source_frames(10)
    for index, frame in enumerate(frames):
        cache.put(index, frame)
    assert cache.peak_ram <= 3 * frame_bytes and cache.peak_spill <= 4 * frame_bytes
    spilled = list(tmp_path.glob("tgm-frames-*/*.raw"))
    assert len(spilled) == 4
    assert [cache.get(i) is None for i in range(10)] == [True] * 3 + [False] * 7  # the 3 oldest dropped
    assert all(np.array_equal(cache.get(i), frames[i]) for i in range(3, 10))
    cache.close()
    assert not list(tmp_path.iterdir())  # the folder goes with the cache


@pytest.mark.unit
def test_frames_whose_visits_are_over_stay_out_of_the_cache(tmp_path):
    frames = smooth_frames(40)
    reader = VideoFrames(probe_video(video_of(frames, tmp_path / "clip.mp4")), FrameCache(64 << 20))  # one GOP
    for index in range(20):
        reader.read_rgb(index)
    reader.forget(range(20))
    assert reader.cache.ram_held == 0
    reader.read_rgb(35)  # a seek back to the GOP's start decodes 0..35 on the way
    held = [i for i in range(40) if reader.cache.get(i) is not None]
    assert held == list(range(20, 36))
    assert np.array_equal(reader.read_rgb(3), read_rgb_of(reader, 3))  # asked for again: decoded again, right
    reader.close()


def read_rgb_of(reader: VideoFrames, index: int) -> np.ndarray:
    fresh = VideoFrames(reader.info, FrameCache(0))
    frame = fresh.read_rgb(index)
    fresh.close()
    return frame


@pytest.mark.unit
def test_a_small_cache_reads_backwards_correctly_by_decoding_again(tmp_path):
    frames = source_frames(20)
    frame_bytes = frames[0].nbytes
    reader = VideoFrames(probe_video(video_of(frames, tmp_path / "clip.mkv")), FrameCache(2 * frame_bytes))
    for index in range(19, -1, -1):
        assert np.array_equal(reader.read_rgb(index), frames[index])
    assert reader.cache.peak_ram <= 2 * frame_bytes
    reader.close()


@pytest.mark.unit
def test_a_frame_is_turned_as_its_display_matrix_says():
    from dataset.video import upright

    image = np.zeros((2, 4, 3), np.uint8)
    image[0, 0] = 255  # the top-left pixel
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")  # no rotated video can be written here

    assert upright(frame, 0)[0, 0, 0] == 255
    turned = upright(frame, 90)  # counter-clockwise, as FFmpeg's display matrix angle counts
    assert turned.shape == (4, 2, 3) and turned[3, 0, 0] == 255 and turned.flags["C_CONTIGUOUS"]
    assert upright(frame, 270)[0, 1, 0] == 255


@pytest.mark.unit
def test_a_video_clip_says_what_is_wrong_with_its_trimaps(tmp_path):
    video = video_of(source_frames(12), tmp_path / "walk.mkv")
    with pytest.raises(UserError, match=r"walk_trimaps does not exist: put its keyframes there as"):
        scan_clip(video)
    (tmp_path / "walk_trimaps").mkdir()
    atomic_write_png(tmp_path / "walk_trimaps" / "00012_trimap.png", np.zeros((40, 64), np.uint8))
    with pytest.raises(UserError, match=r"00012_trimap.png names no frame of .*walk.mkv \(12 frames, 00000 to 00011\)"):
        scan_clip(video)
    (tmp_path / "walk_trimaps" / "00012_trimap.png").unlink()
    with pytest.raises(UserError, match=r"has no keyframes: add at least one <frame number>_trimap\.png to"):
        scan_clip(video)
    atomic_write_png(tmp_path / "walk_trimaps" / "00003_trimap.png", np.zeros((40, 32), np.uint8))
    clip = scan_clip(video, trimaps=tmp_path / "walk_trimaps")
    assert clip.keyframe_indices == [3] and clip.trimap_path(3) == tmp_path / "walk_trimaps" / "00003_trimap.png"
    from dataset.clip import check_sizes

    with pytest.raises(UserError, match=r"00003_trimap.png is 32x40 but .*walk.mkv's frames are 64x40"):
        check_sizes(clip)
    clip.close()
    with pytest.raises(UserError, match=r"DATASET\.TRIMAPS .* is for video clips"):
        scan_clip(tmp_path / "walk_trimaps", trimaps=tmp_path)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(UserError, match=r"damaged\.mp4 is not a video that can be read"):
        scan_clip(damaged)


# --- the internal size --------------------------------------------------------------------------


@pytest.mark.unit
def test_the_internal_size_scales_the_shorter_side_and_never_up():
    assert internal_size(1080, 1920, 480) == (480, 853)
    assert internal_size(1920, 1080, 720) == (1280, 720)
    assert internal_size(720, 1280, 720) == (720, 1280)
    assert internal_size(360, 640, 480) == (360, 640)
    assert internal_size(1080, 1920, 0) == (1080, 1920)
    with pytest.raises(UserError, match="--max_internal_size 8: give the shorter side in pixels, at least 32"):
        PropagationOptions(max_internal_size=8)


@pytest.mark.unit
@pytest.mark.parametrize("band", [1, 2, 3])
@pytest.mark.parametrize("scale", [2.0, 2.5, 4.0])
def test_shrinking_a_trimap_keeps_a_thin_unknown_band_unbroken(band, scale):
    size = 120
    labels = np.zeros((size, size), np.uint8)
    labels[:, 50:] = FOREGROUND
    labels[:, 50 : 50 + band] = UNKNOWN  # a vertical band `band` pixels wide
    labels[80:, :] = BACKGROUND
    small_size = (round(size / scale), round(size / scale))
    small = resize_labels(labels, small_size)
    rows = small[: int(75 / scale)]  # the rows where the band runs between background and foreground
    assert ((rows == UNKNOWN).sum(axis=1) >= 1).all()  # unbroken: every row keeps the band
    assert ((rows == UNKNOWN).sum(axis=1) <= band / scale + 2).all()  # widened by at most a pixel a side
    # no sure pixel appears where the big trimap was not sure of it
    big_again = cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)
    assert not ((big_again == FOREGROUND) & (labels == BACKGROUND)).any()


@pytest.mark.unit
def test_probabilities_are_scaled_back_to_the_frame_size():
    probs = torch.zeros(1, 3, 32, 64)
    probs[:, 2, :, :20] = 1  # foreground on the left of a 20 x 30 working frame (padded to 32 x 64)
    probs[:, 0, :, 20:] = 1
    image = probs_to_image(probs, 20, 30, frame_size=(40, 60))
    assert image.shape == (40, 60, 3)
    assert (image[:, :38].argmax(axis=2) == 2).all() and (image[:, 42:].argmax(axis=2) == 0).all()
    assert probs_to_image(probs, 20, 30).shape == (20, 30, 3)


@pytest.mark.e2e
def test_an_internal_size_propagates_smaller_writes_full_size_and_is_part_of_the_fingerprint(tmp_path, parity_weights):
    sample = make_synthetic_clip(tmp_path / "ws", "clip", 8, (72, 104), keyframes=(0, 7))

    def propagate(**options):
        return run_clip(scan_clip(sample.folder), tmp_path / "out", PropagationOptions(**options), CPU,
                        checkpoint=parity_weights, fuse=False)  # fmt: skip

    full = propagate()
    full_png = read_image(full.result.part_png(0, "00003"), cv2.IMREAD_COLOR).copy()
    small = propagate(max_internal_size=48)
    assert small.computed and not small.reused  # another fingerprint: recomputed
    small_png = read_image(small.result.part_png(0, "00003"), cv2.IMREAD_COLOR)
    assert small_png.shape == full_png.shape == (72, 104, 3)
    assert not np.array_equal(small_png, full_png)  # it really ran smaller
    record = json.loads(small.result.part_record(0).read_text())
    assert record["options"]["max_internal_size"] == 48
    again = propagate(max_internal_size=48)
    assert again.reused and not again.computed


# --- whole runs -----------------------------------------------------------------------------------


def result_files_differ(first: Path, second: Path) -> list[str]:
    """Files of two result folders whose bytes differ (records and locks aside), or that one lacks."""
    differ = []
    names = {p.relative_to(first) for p in first.rglob("*") if p.is_file()}
    names |= {p.relative_to(second) for p in second.rglob("*") if p.is_file()}
    for name in sorted(names):
        if name.name in ("inputs.json", ".lock"):
            continue
        a, b = first / name, second / name
        if not (a.exists() and b.exists() and filecmp.cmp(a, b, shallow=False)):
            differ.append(str(name))
    return differ


@pytest.mark.e2e
def test_test_mf_2_on_a_video_gives_the_trimaps_of_its_frames(tmp_path, parity_weights):
    """A video is a clip like its frames: a lossless video and the PNG folder it was made from; a lossy one and
    the folder tgm.py extract makes of it. Byte-identical results (parts, conf.json, fusing)."""
    sample = make_synthetic_clip(tmp_path / "ws", "clip", 10, (64, 96), keyframes=(0, 7))
    frames = [read_rgb(p) for p in sorted(sample.folder.glob("*_rgb.png"))]
    for suffix in (".mkv", ".mp4"):
        videos = tmp_path / f"videos{suffix}"
        video = video_of(frames, videos / f"clip{suffix}")
        shutil.copytree(sample.folder, videos / "clip_trimaps", ignore=shutil.ignore_patterns("*_rgb.png"))
        if suffix == ".mkv":
            folder = sample.folder
            decoded = VideoFrames(probe_video(video), FrameCache(0))
            assert all(np.array_equal(decoded.read_rgb(i), frames[i]) for i in range(10)), "FFV1 is not lossless here"
            decoded.close()
        else:
            folder = videos / "extracted" / "clip"
            assert run_main("tgm.py", "extract", video, "--out", folder).returncode == 0
            for trimap in (videos / "clip_trimaps").iterdir():
                shutil.copy(trimap, folder)
        outputs = []
        for name, path in (("video", video), ("folder", folder)):
            cfg = write_cfg(tmp_path / f"{name}{suffix}.yaml", path)
            save = tmp_path / f"out_{name}{suffix}"
            run = run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", save)
            assert run.returncode == 0, run.stderr
            fused = run_main("ensemble.py", "--predroot", save, "--dataroot", path.parent)
            assert fused.returncode == 0, fused.stderr
            outputs.append(save / "clip_mem5")
        assert (outputs[0] / "envis" / "00003.png").exists() and (outputs[0] / "part1" / "00003_tri.png").exists()
        assert result_files_differ(*outputs) == [], suffix
    # the negative control: another clip's result differs
    other = make_synthetic_clip(tmp_path / "ws2", "clip", 10, (64, 96), keyframes=(0, 7), seed=5)
    cfg = write_cfg(tmp_path / "other.yaml", other.folder)
    assert run_main("test_mf_2.py", "--cfg", cfg, "--load", parity_weights, "--save", tmp_path / "o").returncode == 0
    assert result_files_differ(tmp_path / "o" / "clip_mem5", tmp_path / "out_folder.mkv" / "clip_mem5")


@pytest.mark.e2e
@pytest.mark.parametrize("held", [None, 0], ids=["fused-from-memory", "read-back"])
def test_discarding_parts_fuses_the_same_trimaps_and_keeps_no_part(tmp_path, parity_weights, monkeypatch, held):
    if held is not None:  # nothing held in memory: every part image is decoded from its PNG again
        monkeypatch.setattr(driver, "FUSION_HELD_BYTES", held)
    decoded = []
    read_image = driver.read_image
    monkeypatch.setattr(driver, "read_image", lambda path, *a: decoded.append(path) or read_image(path, *a))
    sample = make_synthetic_clip(tmp_path / "ws", "clip", 12, (64, 96), keyframes=(2, 8))
    frames = [read_rgb(p) for p in sorted(sample.folder.glob("*_rgb.png"))]
    video = video_of(frames, tmp_path / "videos" / "clip.mkv")
    shutil.copytree(sample.folder, tmp_path / "videos" / "clip_trimaps", ignore=shutil.ignore_patterns("*_rgb.png"))
    kept = run_clip(scan_clip(sample.folder), tmp_path / "kept", PropagationOptions(), CPU, checkpoint=parity_weights)
    clip = scan_clip(video)
    decoded.clear()
    discarded = run_clip(clip, tmp_path / "discarded", PropagationOptions(discard_parts=True), CPU,
                         checkpoint=parity_weights)  # fmt: skip
    assert not discarded.result.part_dirs() and not discarded.fused  # fused while propagating
    part_reads = [p for p in decoded if p.parent.name.startswith("part")]
    part_images = sum(len(part) for part in kept.result.read_conf())
    assert len(part_reads) == (0 if held is None else part_images), "the parts' images: held, or decoded again"
    assert clip.video.decoded == 12 and clip.video.cache.ram_held == 0  # each frame decoded once, then let go
    assert sorted(p.name for p in discarded.result.path.iterdir()) == [
        ".lock", "conf.json", "ensemble", "envis", "uncertainty.json", "uncertainty.png"
    ]  # fmt: skip
    for folder in ("ensemble", "envis"):
        names = sorted(p.name for p in (kept.result.path / folder).iterdir())
        assert len(names) == 12 and names == sorted(p.name for p in (discarded.result.path / folder).iterdir())
        assert all(filecmp.cmp(kept.result.path / folder / n, discarded.result.path / folder / n, shallow=False)
                   for n in names)  # fmt: skip
    assert json.loads(kept.result.uncertainty_json.read_text()) == json.loads(
        discarded.result.uncertainty_json.read_text()
    )
    again = run_main("ensemble.py", "--predroot", tmp_path / "discarded", "--dataroot", tmp_path / "videos")
    assert again.returncode == 2 and "was fused while propagating (test_mf_2.py --discard_parts" in again.stderr


# --- out: videos ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_frame_numbers_come_from_numeric_increasing_stems():
    assert frame_numbers(["00000", "00002", "00010"]) == [0, 2, 10]
    assert frame_numbers(["a", "b"]) is None and frame_numbers(["00003", "00001"]) is None


@pytest.mark.cli
def test_foregrounds_encode_to_prores_4444_with_their_alpha_at_the_source_rate(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "matte"
    folder.mkdir()
    alphas = {}
    for number in (0, 2, 4, 6):  # every other frame of the source
        alpha = np.zeros((36, 50), np.uint8)
        alpha[5:30, 10 + number : 35 + number] = 255
        alpha[5:30, 9 + number] = rng.integers(1, 255)
        bgr = rng.integers(0, 256, (36, 50, 3), dtype=np.uint8)
        atomic_write_png(folder / f"{number:05d}_fg.png", np.dstack([bgr, alpha]))
        alphas[number] = alpha
    source = video_of(smooth_frames(8, (36, 50)), tmp_path / "source.mp4", fps=30000 / 1001)
    out = tmp_path / "fg.mov"
    run = run_main("tgm.py", "encode", "--images_dir", folder, "--suffix", "_fg.png", "--out", out, "--source", source)
    assert run.returncode == 0, run.stderr
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "prores" and "yuva444" in stream.codec_context.pix_fmt
        decoded = list(container.decode(stream))
        times = [frame.pts * stream.time_base for frame in decoded]
        assert times == [Fraction(n * 1001, 30000) for n in (0, 2, 4, 6)]  # each at its source frame's time, 29.97 fps
        for number, frame in zip(alphas, decoded):
            assert np.abs(frame.to_ndarray(format="rgba")[..., 3].astype(int) - alphas[number]).max() <= 1
    flat = tmp_path / "fg.mp4"  # no alpha in H.264: over black
    assert run_main("tgm.py", "encode", "--images_dir", folder, "--suffix", "_fg.png", "--out", flat).returncode == 0
    assert probe_video(flat).frame_count == 4
    refused = run_main("tgm.py", "encode", "--images_dir", folder, "--suffix", "_fg.png", "--out", tmp_path / "x.gif")
    assert refused.returncode == 2 and "write the video as one of .mp4" in refused.stderr


# --- matting: the subject leaves the frame ------------------------------------------------------


@pytest.mark.cli
def test_a_trimap_with_one_known_side_gets_the_only_alpha_it_allows(tmp_path):
    frames, trimaps = tmp_path / "clip", tmp_path / "trimaps"
    frames.mkdir()
    trimaps.mkdir()
    image = smooth_frames(1, (40, 40))[0]
    video = video_of([image] * 3, tmp_path / "clip.mkv")
    for stem, labels in (
        ("00000", np.where(np.arange(40)[None, :] < 30, BACKGROUND, UNKNOWN)),  # only the soft edge is left
        ("00001", np.where(np.arange(40)[None, :] < 30, FOREGROUND, UNKNOWN)),  # the subject fills the frame
        ("00002", np.full((40, 40), UNKNOWN)),  # nothing known: no alpha can be given
    ):
        labels = np.broadcast_to(labels, (40, 40)).astype(np.uint8)
        atomic_write_png(trimaps / f"{stem}_trimap.png", np.array([0, 128, 255], np.uint8)[labels])
    run = run_main("tgm.py", "matte", "--trimaps", trimaps, "--frames_dir", video, "--out", tmp_path / "m")
    assert run.returncode == 1, run.stderr  # frame 00002 only
    assert "frame 00000: no sure foreground: alpha 0 in its unknown band" in run.stderr
    assert "frame 00001: no sure background: alpha 1 in its unknown band" in run.stderr
    assert "frame 00002: the trimap has no foreground and no background" in run.stderr
    assert (read_image(tmp_path / "m" / "00000_alpha.png", cv2.IMREAD_GRAYSCALE) == 0).all()
    assert (read_image(tmp_path / "m" / "00001_alpha.png", cv2.IMREAD_GRAYSCALE) == 255).all()
    (trimaps / "00002_trimap.png").unlink()
    run = run_main("tgm.py", "matte", "--trimaps", trimaps, "--frames_dir", video, "--out", tmp_path / "m")
    assert run.returncode == 0 and "2 skipped, 0 failed" in run.stderr


@pytest.mark.cli
def test_mattes_from_a_video_clip_equal_those_from_its_extracted_frames(tmp_path):
    frames = smooth_frames(3, (40, 48))
    video = video_of(frames, tmp_path / "clip.mp4")
    assert run_main("tgm.py", "extract", video, "--out", tmp_path / "extracted").returncode == 0
    trimaps = tmp_path / "trimaps"
    trimaps.mkdir()
    for i in range(3):
        grey = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        labels = np.where(grey > 150, FOREGROUND, BACKGROUND).astype(np.uint8)
        labels[cv2.dilate((labels == FOREGROUND).astype(np.uint8), np.ones((5, 5))) != cv2.erode(
            (labels == FOREGROUND).astype(np.uint8), np.ones((5, 5)))] = UNKNOWN  # fmt: skip
        atomic_write_png(trimaps / f"{i:05d}_trimap.png", np.array([0, 128, 255], np.uint8)[labels])
    for name, source in (("from_video", video), ("from_folder", tmp_path / "extracted")):
        run = run_main("tgm.py", "matte", "--trimaps", trimaps, "--frames_dir", source, "--out", tmp_path / name)
        assert run.returncode == 0, run.stderr
    for i in range(3):
        for suffix in ("_alpha.png", "_fg.png"):
            name = f"{i:05d}{suffix}"
            assert filecmp.cmp(tmp_path / "from_video" / name, tmp_path / "from_folder" / name, shallow=False)
    frames_of = open_clip_frames(video)
    assert frames_of.is_video and frames_of.stems == ["00000", "00001", "00002"]
    assert decode_trimap(read_image(trimaps / "00000_trimap.png", cv2.IMREAD_GRAYSCALE)).shape == (40, 48)
    frames_of.close()


# --- the app and the workspace runner -------------------------------------------------------------


def app_with_a_video(tmp_path, parity_weights):
    from helpers import app_workspace
    from webapp.server import AppConfig, create_app

    workspace = app_workspace(tmp_path)
    frames = [read_rgb(p) for p in sorted((workspace / "clip").glob("*_rgb.png"))]
    video_of(frames, workspace / "walk.mkv")
    app = create_app(AppConfig(workspace, tmp_path / "results", "tok-1", load=parity_weights))
    client = app.test_client()

    def call(method: str, path: str, **kwargs):
        return client.open(path, method=method, base_url="http://127.0.0.1:8765", headers={"X-Token": "tok-1"},
                           **kwargs)  # fmt: skip

    return workspace, frames, call


def upload(trimap_grey: np.ndarray) -> dict:
    import io

    from utils.images import encode_png

    return {"data": {"trimap": (io.BytesIO(encode_png(trimap_grey)), "t.png")}, "content_type": "multipart/form-data"}


@pytest.mark.unit
def test_the_app_shows_a_video_clip_and_saves_its_keyframes_beside_it(tmp_path, parity_weights):
    from pipeline.workspace import find_clips

    workspace, frames, call = app_with_a_video(tmp_path, parity_weights)
    clips = call("GET", "/api/clips").get_json()["clips"]
    assert [c["name"] for c in clips] == ["clip", "walk"] and clips[1]["frames"] == 5 and clips[1]["keyframes"] == 0
    detail = call("GET", "/api/clips/walk").get_json()
    assert detail["stems"] == ["00000", "00001", "00002", "00003", "00004"] and (detail["height"], detail["width"]) == (
        40, 56
    )  # fmt: skip
    shown = cv2.imdecode(np.frombuffer(call("GET", "/api/clips/walk/frame/00003").data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(shown[..., ::-1], frames[3])
    assert call("GET", "/api/clips/walk/frame/00005").status_code == 404
    assert find_clips(workspace) == [workspace / "clip"]  # no keyframes yet: not a clip to propagate
    trimap = read_image(workspace / "clip" / "00000_trimap.png", cv2.IMREAD_GRAYSCALE)
    saved = call("PUT", "/api/clips/walk/keyframe/00000", **upload(trimap))
    assert saved.status_code == 200, saved.get_json()
    assert (workspace / "walk_trimaps" / "00000_trimap.png").exists()
    assert call("GET", "/api/clips/walk").get_json()["keyframes"] == ["00000"]
    assert call("GET", "/api/clips/walk/keyframe/00000").status_code == 200
    assert find_clips(workspace) == [workspace / "clip", workspace / "walk.mkv"]


@pytest.mark.e2e
def test_an_app_job_propagates_a_video_clip_like_its_frames_folder(tmp_path, parity_weights):
    workspace, _, call = app_with_a_video(tmp_path, parity_weights)
    shutil.copytree(workspace / "clip", workspace / "walk_trimaps", ignore=shutil.ignore_patterns("*_rgb.png"))
    for clip in ("walk", "clip"):
        assert call("POST", "/api/job", json={"clip": clip, "kind": "propagate"}).status_code == 202
        for _ in range(600):
            job = call("GET", "/api/job").get_json()["job"]
            if job["state"] != "running":
                break
            import time

            time.sleep(0.3)
        assert job["state"] == "done", job
    results = tmp_path / "results"
    assert result_files_differ(results / "walk_mem5", results / "clip_mem5") == []
    assert call("GET", "/api/clips/walk/result/00002").status_code == 200
