"""The one image preprocessing of medhash (contract v1, docs/MODEL_CARD.md mirrors it and
functions/encode/preprocess.ts implements it again for the service; a golden-file test pins both).

decode (PNG or JPEG through PIL; DICOM through dicom.py, the mirror of the service's decoder, to
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


def decode_rgb(data: bytes) -> np.ndarray:
    """Bytes of a PNG, JPEG or DICOM -> (H, W, 3) uint8. Alpha is dropped, grey is
    replicated. Told apart by their bytes, in the service's order (PNG, JPEG, then DICOM); a DICOM
    the service refuses raises dicom.DicomError (a ValueError) with the service's message."""
    if dicom.sniffs_as_dicom(data):
        return dicom.decode_rgb(data)
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I"):
            arr = np.asarray(im, dtype=np.float64)
            arr = np.clip(arr / max(arr.max(), 1) * 255.0, 0, 255).astype(np.uint8)
            return np.repeat(arr[:, :, None], 3, axis=2)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


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
