"""The project's image files: reading any depth, one rule for 16 bits, PNG headers without decoding.

Every module that reads or writes a picture goes through here, so that a 16-bit image becomes
8-bit one way (rounded: ``round(v / 257)``) and a PNG's size is known without decoding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


def read_image(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    """cv2.imread that raises a UserError naming the file instead of returning None."""
    path = Path(path)
    data = np.fromfile(str(path), dtype=np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, flags) if data is not None and data.size else None
    if image is None:
        raise UserError(f"{path} is missing or not a readable image; re-export it as PNG")
    return image


def to_8bit(image: np.ndarray) -> np.ndarray:
    """An 8- or 16-bit image as uint8; 16-bit values are rounded (``round(v / 257)``), the one rule."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    raise ValueError(f"pixel type {image.dtype}: only 8- and 16-bit images are read")


def to_grey(image: np.ndarray) -> np.ndarray:
    """An image of any channel count (grey, BGR, BGRA) as one grey uint8 channel."""
    image = to_8bit(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2GRAY)
    return image


def read_rgb(path: Path) -> np.ndarray:
    """A picture as H x W x 3 uint8 in RGB order: grey expanded, alpha dropped, 16 bits rounded."""
    return as_rgb(read_image(path), path)


def decode_rgb(data: bytes, where: str) -> np.ndarray:
    """:func:`read_rgb` of a file's bytes (read already, as the caller checked them)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None:
        raise UserError(f"{where} is not a readable image; re-export it as PNG")
    return as_rgb(image, where)


def as_rgb(image: np.ndarray, path: Path | str) -> np.ndarray:
    """A decoded image (cv2's channel order) as H x W x 3 uint8 RGB."""
    if image.dtype not in (np.uint8, np.uint16):
        raise UserError(f"{path} has pixel type {image.dtype}; frames must be 8-bit (or 16-bit) PNGs")
    image = to_8bit(image)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_alpha(path: Path) -> np.ndarray:
    """An alpha matte (8- or 16-bit grey PNG; RGBA: its alpha channel) as float64 in [0, 1]."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.ndim == 3:
        image = image[..., -1] if image.shape[2] == 4 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.astype(np.float64) / (65535.0 if image.dtype == np.uint16 else 255.0)


@dataclass(frozen=True)
class PngHeader:
    height: int
    width: int
    bit_depth: int
    colour: str


def parse_png_header(head: bytes) -> PngHeader | None:
    """The IHDR fields of a PNG from its first 26 bytes; None if they are not a PNG's."""
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return PngHeader(
        height=int.from_bytes(head[20:24], "big"),
        width=int.from_bytes(head[16:20], "big"),
        bit_depth=head[24],
        colour=PNG_COLOUR_TYPES.get(head[25], f"type {head[25]}"),
    )


def png_header(path: Path) -> PngHeader | None:
    """Size, bit depth and colour type from a PNG file's header without decoding; None if not a PNG.

    Raises UserError for a PNG that is cut short (no IEND chunk at its end).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(26)
            handle.seek(max(0, path.stat().st_size - 8))
            tail = handle.read(8)
    except OSError as exc:
        raise UserError(f"{path} cannot be read ({exc.strerror})") from exc
    header = parse_png_header(head)
    if header is not None and tail != PNG_END:
        raise UserError(f"{path} is a truncated PNG (it does not end with an IEND chunk); export it again")
    return header


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header when it is a PNG."""
    header = png_header(path)
    if header is None:
        return read_image(path).shape[:2]
    return header.height, header.width


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an image (H x W or H x W x C, uint8 or uint16, OpenCV channel order)."""
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode an image of shape {image.shape} as PNG")
    return buffer.tobytes()
