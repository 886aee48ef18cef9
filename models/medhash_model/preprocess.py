"""The one image preprocessing of medhash (contract v1, docs/MODEL_CARD.md mirrors it and
functions/encode/preprocess.ts implements it again for the service; a golden-file test pins both).

decode (PNG or JPEG through PIL, after the service's checks and with its refusals; DICOM through dicom.py, the mirror of the service's decoder, to
its 8-bit pixels) -> RGB uint8 -> (channels == 1: luma 0.299 R + 0.587 G + 0.114 B, in float) ->
separable antialiased bilinear resize to size x size (triangle filter whose support widens by
the downscale factor, pixel centres at i + 0.5, weights renormalised at the borders: PIL's
BILINEAR rule) -> divide by 255 -> float32, channels first. No mean/std normalisation.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from . import dicom

PREPROCESS_VERSION = 1
#: What decode_rgb refuses, revised without changing the pixels of what it accepts (the cards'
#: contract stays v1): 2 = the service's refusals (2026-11-29); 3 = a JPEG 2000 codestream walked to
#: its EOC before Pillow, as on the service (one cut short is refused, where one cut after its first
#: SOT decoded to zeros); 4 = a JPEG 2000 tile-part out of its tile's order (Isot, TPsot, TNsot)
#: refused by that walk on both sides (Pillow refused each one the mutation run found, in its own
#: words; the service decoded one after its tile's last). data.py's cache key holds it, so a folder cached before a revision is decoded again,
#: and a file now refused is named.
DECODE_REVISION = 4
LUMA = (0.299, 0.587, 0.114)


def resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of the antialiased bilinear filter, rows summing to 1."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        lo = max(int(np.floor(centre - support)), 0)
        hi = min(int(np.ceil(centre + support)), n_in)
        j = np.arange(lo, hi)
        t = 1.0 - np.abs((j + 0.5 - centre) / support)
        t = np.clip(t, 0.0, None)
        w[i, lo:hi] = t / t.sum()
    return w


#: PNG's colour types and the bit depths each may have.
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _png_header(b: bytes) -> tuple[int, int]:
    """image.ts's pngHeader: IHDR first, every chunk complete, at least one IDAT, ending in IEND,
    with its refusals -> (width, height)."""
    if len(b) < 33 or b[8:12] != b"\0\0\0\x0d" or b[12:16] != b"IHDR":
        raise dicom.DicomError(422, "corrupt_image", "PNG has no complete IHDR header")
    width, height = int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")
    depth, colour = b[24], b[25]
    if depth not in _PNG_DEPTHS.get(colour, ()):
        raise dicom.DicomError(422, "corrupt_image", f"PNG declares colour type {colour} with bit depth {depth}, which PNG does not define")
    pos, idat, palette = 8, 0, False
    while True:
        if pos + 12 > len(b):
            raise dicom.DicomError(422, "corrupt_image", f"PNG is truncated: chunk at byte {pos} is incomplete (no IEND)")
        length = int.from_bytes(b[pos:pos + 4], "big")
        kind = b[pos + 4:pos + 8].decode("latin-1")
        if length > 0x7FFFFFFF or pos + 12 + length > len(b):
            raise dicom.DicomError(422, "corrupt_image", f"PNG is truncated: chunk {dicom._json(kind)} at byte {pos} runs past the end")
        if kind == "PLTE" and idat == 0:
            palette = True
        if kind == "IDAT":
            idat += length
        pos += 12 + length
        if kind == "IEND":
            break
    if idat == 0:
        raise dicom.DicomError(422, "corrupt_image", "PNG has no image data (IDAT)")
    if colour == 3 and not palette:
        raise dicom.DicomError(422, "corrupt_image", "palette PNG has no palette (PLTE) before its image data")
    return width, height


def decode_rgb(data: bytes) -> np.ndarray:
    """Bytes of a PNG, JPEG or DICOM -> (H, W, 3) uint8. Alpha is dropped, grey is
    replicated. Told apart by their bytes, in the service's order (PNG, JPEG, then DICOM), and
    refused as decodeImage (functions/encode/image.ts) refuses them, under its limits: anything
    else, and a PNG or JPEG its structural walk refuses (a JPEG of 4 components, 12 bits or a
    coding mozjpeg lacks among them), raises dicom.DicomError (a ValueError) with the service's
    status, code and message, so that nothing is trained on that the service would not encode."""
    data = bytes(data)
    dicom.check_bytes(data)
    if data.startswith(dicom._JPEG):
        width, height, channels, raw = dicom._decode_jpeg_file(data)
        px = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, channels)
        return np.repeat(px, 3, axis=2) if channels == 1 else px.copy()
    if not data.startswith(dicom._PNG):
        if dicom.is_dicom(data):
            return dicom.decode_rgb(data)
        start = " ".join(f"{x:02x}" for x in data[:8])
        raise dicom.DicomError(415, "unsupported_image_type", f"not a PNG, JPEG or DICOM image (starts with {start})")
    dicom._check_size(*_png_header(data))
    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, dtype=np.float64)
                arr = np.clip(arr / max(arr.max(), 1) * 255.0, 0, 255).astype(np.uint8)
                return np.repeat(arr[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as e:  # what the codec says of data that passed the walk, as image.ts's `guarded`
        raise dicom.DicomError(422, "corrupt_image", f"PNG could not be decoded: {e}") from e


def preprocess_rgb(rgb: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (channels, size, size) float32 in [0, 1]."""
    x = rgb.astype(np.float64)
    if channels == 1:
        x = (x[:, :, 0] * LUMA[0] + x[:, :, 1] * LUMA[1] + x[:, :, 2] * LUMA[2])[:, :, None]
    elif channels != 3:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    h, w = x.shape[:2]
    wy = resize_weights(h, size)
    wx = resize_weights(w, size)
    out = np.stack([wy @ x[:, :, c] @ wx.T for c in range(x.shape[2])])
    return (out / 255.0).astype(np.float32)


def preprocess_bytes(data: bytes, size: int, channels: int) -> np.ndarray:
    return preprocess_rgb(decode_rgb(data), size, channels)
