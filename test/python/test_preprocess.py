"""preprocess.py refuses what the service's decodeImage refuses (functions/encode/image.ts), with
its status, code and message, instead of training on an image the service would never encode:
another format under a .png or .jpg name, a CMYK or arithmetic-coded JPEG, an image past the limits.
test/encode/parity.test.ts holds both sides to the same words; this is the training side alone."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medhash_model import data
from medhash_model.dicom import DicomError
from medhash_model.preprocess import decode_rgb

RGB = (np.arange(24 * 32 * 3).reshape(24, 32, 3) % 251).astype(np.uint8)


def saved(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("b, status, message", [
    (saved(Image.fromarray(np.dstack([RGB, RGB[:, :, :1]]), "CMYK"), "JPEG"), 415,
     "JPEG with 4 colour components is not supported (grey or YCbCr only)"),
    (saved(Image.fromarray(RGB), "JPEG").replace(b"\xff\xc0", b"\xff\xc9", 1), 415,
     "arithmetic-coded JPEG (SOF9) is not supported (Huffman-coded baseline, extended or progressive only)"),
    (saved(Image.fromarray(RGB), "GIF"), 415, "not a PNG, JPEG or DICOM image (starts with 47 49 46 38 37 61 20 00)"),
    (saved(Image.new("L", (1, 4097)), "PNG"), 413, "image is 1x4097; width and height may be at most 4096"),
    (saved(Image.fromarray(RGB), "PNG")[:-12], 422, "PNG is truncated: chunk at byte 0 is incomplete (no IEND)"),
], ids=["cmyk-jpeg", "arithmetic-jpeg", "gif", "png-4097-high", "png-without-iend"])
def test_what_the_service_refuses_is_refused_with_its_words(b, status, message):
    if message.startswith("PNG is truncated"):
        message = message.replace("byte 0", f"byte {len(b)}")
    with pytest.raises(DicomError) as e:
        decode_rgb(b)
    assert (e.value.status, str(e.value)) == (status, message)


def test_a_cmyk_jpeg_in_a_class_folder_stops_the_load_naming_the_file(tmp_path):
    cls = tmp_path / "images" / "a"
    cls.mkdir(parents=True)
    (cls / "ok.png").write_bytes(saved(Image.fromarray(RGB), "PNG"))
    (cls / "print.jpg").write_bytes(saved(Image.fromarray(np.dstack([RGB, RGB[:, :, :1]]), "CMYK"), "JPEG"))
    with pytest.raises(DicomError, match=r"^a/print\.jpg: JPEG with 4 colour components is not supported"):
        data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
