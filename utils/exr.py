"""OpenEXR images for compositing, through the OpenEXR project's own Python bindings (``OpenEXR``).

Alpha mattes are one half-float channel ``A``; foregrounds are RGBA half floats. Both follow the
OpenEXR conventions a compositor assumes: linear light (the 8-bit sRGB colours are decoded with
the sRGB curve), Rec.709 / sRGB primaries and D65 white (written as the ``chromaticities``
attribute), and RGB premultiplied by A (the format's definition of RGBA; there is no attribute for
it, so the ``comments`` attribute says so too). Files are written whole to a temporary name and
renamed, as every output of this project.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from utils.errors import UserError

COMPRESSIONS = ("zip", "piz")
REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)  # red, green, blue, white (x, y)
FOREGROUND_COMMENT = "linear Rec.709 (sRGB primaries, D65); RGB premultiplied by A"
MATTE_COMMENT = "alpha matte, linear coverage 0-1"


def _openexr():
    try:
        import OpenEXR
    except ImportError as exc:  # it is a runtime requirement; a stripped environment says what to do
        raise UserError("writing EXR needs the OpenEXR package: pip install 'OpenEXR>=3.3'") from exc
    return OpenEXR


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB decoding curve (IEC 61966-2-1) on values in [0, 1]."""
    values = np.asarray(values, np.float64)
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def _header(compression: str, comment: str) -> dict:
    exr = _openexr()
    if compression not in COMPRESSIONS:
        raise UserError(f"EXR compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}")
    codes = {"zip": exr.ZIP_COMPRESSION, "piz": exr.PIZ_COMPRESSION}
    return {"compression": codes[compression], "type": exr.scanlineimage, "chromaticities": REC709_CHROMATICITIES,
            "comments": comment, "software": "tcvom-trimap-propagation"}  # fmt: skip


def _write(path: Path, header: dict, channels: dict) -> None:
    exr = _openexr()
    path = Path(path)
    tmp = path.with_name(f".{path.name[:200]}.{os.getpid()}.partial.exr")
    try:
        with exr.File(header, channels) as image:
            image.write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_matte_exr(path: Path, alpha: np.ndarray, compression: str = "zip") -> None:
    """An alpha matte (H x W, float in [0, 1]) as a one-channel half-float EXR (channel ``A``)."""
    _write(path, _header(compression, MATTE_COMMENT), {"A": np.asarray(alpha, np.float32).astype(np.float16)})


def write_foreground_exr(path: Path, rgb: np.ndarray, alpha: np.ndarray, compression: str = "zip") -> None:
    """A foreground (``rgb``: H x W x 3 sRGB-encoded colours in [0, 1], straight; ``alpha``: H x W) as
    an RGBA half-float EXR: linear light, premultiplied by alpha."""
    linear = srgb_to_linear(rgb) * np.asarray(alpha, np.float64)[..., None]
    rgba = np.dstack([linear, alpha]).astype(np.float16)
    _write(path, _header(compression, FOREGROUND_COMMENT), {"RGBA": rgba})


def read_exr(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(the header, the channels by name: ``A``, or ``RGBA`` as H x W x 4) of an EXR file."""
    exr = _openexr()
    with exr.File(str(path)) as image:
        return dict(image.header()), {name: channel.pixels.copy() for name, channel in image.channels().items()}
