"""What a compositor gets: videos whose colours decode by their tags to the images they were made from,
EXR mattes and foregrounds that read back through OpenEXR with their header saying what they hold, and
each format composited the way it states (straight or premultiplied) giving the project's composite."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from dataset.video import FrameCache, VideoFrames, probe_video, write_video
from evaluation.pictures import write_video as write_bgr_video
from helpers import run_main
from utils.exr import (
    FOREGROUND_COMMENT,
    REC709_CHROMATICITIES,
    read_exr,
    srgb_to_linear,
    write_foreground_exr,
    write_matte_exr,
)

PATCHES = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [128, 128, 128], [0, 0, 0],
                    [200, 120, 40], [30, 90, 200]], np.uint8)  # fmt: skip


def patch_image(height: int, width: int) -> np.ndarray:
    """Eight flat colour patches side by side (RGB)."""
    image = np.zeros((height, width, 3), np.uint8)
    for k, colour in enumerate(PATCHES):
        image[:, k * width // len(PATCHES) : (k + 1) * width // len(PATCHES)] = colour
    return image


def patch_colours(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    step = width // len(PATCHES)
    return np.array([image[height // 4 : 3 * height // 4, k * step + step // 4 : (k + 1) * step - step // 4]
                     .reshape(-1, image.shape[2]).mean(0) for k in range(len(PATCHES))])  # fmt: skip


def decode_by_tags(path) -> tuple[np.ndarray, tuple]:
    """The first frame as RGB(A) the way an editor decodes it: by the stream's colour tags, or for a
    stream without them BT.709 from 720 lines on (BT.601 below); and the tags."""
    with av.open(str(path)) as container:
        frame = next(container.decode(container.streams.video[0]))
    tags = (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc)
    layout = "rgba" if frame.format.name.startswith("yuva") else "rgb24"
    options = {}
    if frame.colorspace == 2:  # unspecified
        options = {"src_colorspace": "ITU709" if frame.height >= 720 else "ITU601", "dst_color_range": "JPEG"}
    return frame.to_ndarray(format=layout, **options), tags


@pytest.mark.unit
@pytest.mark.parametrize("size", [(64, 128), (1080, 1920)], ids=["small", "1080p"])
@pytest.mark.parametrize("name", ["prores4444.mov", "prores422.mov", "h264.mp4", "mpeg4.avi"])
def test_every_video_writer_gives_back_its_images_colours(tmp_path, size, name):
    rgb = patch_image(*size)
    alpha = name == "prores4444.mov"
    image = np.dstack([rgb, np.full(size, 180, np.uint8)]) if alpha else rgb
    path = tmp_path / name
    write_video(path, [image, image], 25)
    decoded, tags = decode_by_tags(path)
    difference = np.abs(patch_colours(decoded[..., :3]) - patch_colours(rgb)).max()
    assert difference <= 3, f"{name} {size}: patches {difference:.1f} levels off (tags {tags})"
    if name != "mpeg4.avi":  # .avi carries no tags: there the matrix is what decoders assume for the size
        assert tags == (1, 1, 1, 1), f"BT.709 matrix, limited range, BT.709 primaries and transfer: {tags}"
    if alpha:
        assert np.abs(decoded[..., 3].astype(int) - 180).max() <= 1


@pytest.mark.unit
def test_the_reader_takes_an_untagged_hd_video_as_bt709_and_keeps_tagged_ones(tmp_path):
    rgb = patch_image(720, 1280)
    path = tmp_path / "untagged.mp4"
    with av.open(str(path), "w") as container:  # another tool's file: BT.709 pixels, no tags at all
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
        )
        frame.colorspace = 2  # unspecified: the pixels are BT.709's, nothing says so
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    assert decode_by_tags(path)[1][0] == 2, "the test file really carries no matrix tag"
    reader = VideoFrames(probe_video(path), FrameCache(0))
    assert np.abs(patch_colours(reader.read_rgb(0)) - patch_colours(rgb)).max() <= 3
    reader.close()


@pytest.mark.unit
def test_the_demo_writers_1080p_foreground_video_is_its_foreground_pngs(tmp_path):
    # pipeline/demo.py and the app's matte job write foreground.mov from the RGBA PNGs this way
    rgb = patch_image(1080, 1920)
    alpha = np.tile(np.linspace(0, 255, 1920).astype(np.uint8), (1080, 1))
    bgra = np.dstack([rgb[..., ::-1], alpha])
    path = tmp_path / "foreground.mov"
    write_bgr_video(path, [bgra, bgra], 25)
    decoded, _ = decode_by_tags(path)
    assert np.abs(patch_colours(decoded[..., :3]) - patch_colours(rgb)).max() <= 3
    assert np.abs(decoded[..., 3].astype(int) - alpha).max() <= 3


@pytest.mark.unit
@pytest.mark.parametrize("compression", ["zip", "piz"])
def test_exr_mattes_and_foregrounds_read_back_with_their_header(tmp_path, compression):
    import OpenEXR

    rng = np.random.default_rng(0)
    alpha = rng.random((24, 40))
    rgb = rng.random((24, 40, 3))
    write_matte_exr(tmp_path / "a.exr", alpha, compression)
    write_foreground_exr(tmp_path / "fg.exr", rgb, alpha, compression)
    header, channels = read_exr(tmp_path / "a.exr")
    assert list(channels) == ["A"] and channels["A"].dtype == np.float16
    assert np.abs(channels["A"].astype(float) - alpha).max() < 1e-3
    header, channels = read_exr(tmp_path / "fg.exr")
    rgba = channels["RGBA"].astype(float)
    assert rgba.shape == (24, 40, 4) and np.abs(rgba[..., 3] - alpha).max() < 1e-3
    assert np.abs(rgba[..., :3] - srgb_to_linear(rgb) * alpha[..., None]).max() < 2e-3, "linear, premultiplied"
    codes = {"zip": OpenEXR.ZIP_COMPRESSION, "piz": OpenEXR.PIZ_COMPRESSION}
    assert header["compression"] == codes[compression]
    assert np.allclose(header["chromaticities"], REC709_CHROMATICITIES) and header["comments"] == FOREGROUND_COMMENT


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    values = np.clip(values, 0, 1)
    return np.where(values <= 0.0031308, values * 12.92, 1.055 * values ** (1 / 2.4) - 0.055)


@pytest.mark.unit
def test_each_format_composited_as_it_states_gives_the_projects_composite(tmp_path):
    rng = np.random.default_rng(1)
    fg = rng.random((16, 24, 3))  # straight foreground colours, sRGB-encoded
    alpha = rng.random((16, 24))
    background = rng.random((16, 24, 3))
    project = fg * alpha[..., None] + background * (1 - alpha[..., None])  # matting/solve.py::composite
    # the PNG and the ProRes 4444 video: straight (colours not multiplied by alpha)
    png_fg, png_alpha = np.round(fg * 255) / 255, np.round(alpha * 255) / 255
    from_png = png_fg * png_alpha[..., None] + background * (1 - png_alpha[..., None])
    assert np.abs(from_png - project).max() * 255 <= 2
    bgra = np.dstack([np.round(fg[..., ::-1] * 255), np.round(alpha * 255)]).astype(np.uint8)
    write_bgr_video(tmp_path / "fg.mov", [bgra], 25)
    decoded, _ = decode_by_tags(tmp_path / "fg.mov")
    video_fg, video_alpha = decoded[..., :3] / 255.0, decoded[..., 3] / 255.0
    from_video = video_fg * video_alpha[..., None] + background * (1 - video_alpha[..., None])
    assert np.abs(from_video - project).max() * 255 <= 6  # 4:4:4 10-bit and random colours: a level or a few
    assert np.abs(from_video - project).mean() * 255 <= 1.5
    # the EXR: premultiplied, linear: over the background in linear light, the project's blend in linear light
    write_foreground_exr(tmp_path / "fg.exr", fg, alpha)
    rgba = read_exr(tmp_path / "fg.exr")[1]["RGBA"].astype(float)
    from_exr = rgba[..., :3] + srgb_to_linear(background) * (1 - rgba[..., 3:])
    linear_blend = srgb_to_linear(fg) * alpha[..., None] + srgb_to_linear(background) * (1 - alpha[..., None])
    assert np.abs(linear_to_srgb(from_exr) - linear_to_srgb(linear_blend)).max() * 255 <= 2
    # the negative control: taken as straight, the EXR's colours are darkened by alpha twice
    as_straight = rgba[..., :3] * rgba[..., 3:] + srgb_to_linear(background) * (1 - rgba[..., 3:])
    assert np.abs(linear_to_srgb(as_straight) - linear_to_srgb(linear_blend)).max() * 255 > 20


@pytest.mark.cli
def test_encode_writes_an_exr_sequence_of_mattes_and_foregrounds(tmp_path):
    folder = tmp_path / "matte"
    folder.mkdir()
    alpha = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (20, 1))
    for stem in ("00003", "00004"):
        cv2.imwrite(str(folder / f"{stem}_alpha.png"), alpha)
        cv2.imwrite(str(folder / f"{stem}_fg.png"), np.dstack([np.full((20, 32, 3), 200, np.uint8), alpha]))
    for suffix in ("_alpha.png", "_fg.png"):
        run = run_main("tgm.py", "encode", "--images_dir", folder, "--suffix", suffix, "--out", tmp_path / "exr",
                       "--exr", "piz")  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "exr").iterdir()) == [
        "00003_alpha.exr",
        "00003_fg.exr",
        "00004_alpha.exr",
        "00004_fg.exr",
    ]
    matte = read_exr(tmp_path / "exr" / "00004_alpha.exr")[1]["A"].astype(float)
    assert np.abs(matte - alpha / 255.0).max() < 1e-3
    rgba = read_exr(tmp_path / "exr" / "00004_fg.exr")[1]["RGBA"].astype(float)
    assert np.abs(rgba[..., 0] - srgb_to_linear(200 / 255) * alpha / 255.0).max() < 2e-3
