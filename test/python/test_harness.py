"""The training harness around the model: preprocessing on all cores, device choice."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from medhash_model import data
from medhash_model.train import resolve_device

DATA = Path(os.environ.get("MEDHASH_DATA") or next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()), "shared/data"))


def test_preprocessing_on_several_processes_equals_one(monkeypatch):
    recs = data.records(DATA / "pneumoniamnist")[:1200]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    one = data._preprocess_all(recs, 16, 1, "serial")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    two = data._preprocess_all(recs, 16, 1, "forked")
    assert one.dtype == np.float16 and one.shape == (1200, 1, 16, 16)
    assert np.array_equal(one, two)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_auto_falls_back_to_the_cpu_and_cuda_is_refused_without_it():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(SystemExit, match="no CUDA device"):
        resolve_device("cuda")


def test_int8_calibration_takes_train_images_only_and_is_reproducible():
    from medhash_model.quantize import calibration_batches
    source = DATA / "pneumoniamnist"
    batches = calibration_batches(str(source), 32, 1, n=100, seed=0)
    assert [b.shape for b in batches] == [(32, 1, 32, 32)] * 3 + [(4, 1, 32, 32)]
    assert all(b.dtype == np.float32 for b in batches)
    calib = np.concatenate(batches)
    ds = data.load(source, 32, 1)
    train = ds.splits["train"].x.astype(np.float32).reshape(len(ds.splits["train"].y), -1)
    rows = {r.tobytes() for r in train}
    assert all(c.reshape(-1).tobytes() in rows for c in calib)
    again = np.concatenate(calibration_batches(str(source), 32, 1, n=100, seed=0))
    other = np.concatenate(calibration_batches(str(source), 32, 1, n=100, seed=1))
    assert np.array_equal(calib, again) and not np.array_equal(calib, other)


def test_preprocessing_cache_follows_a_changed_class_folder(tmp_path):
    """The cache is keyed by the folder's files too: images added to a class folder after a first
    load are read, not the arrays of its old contents."""
    from PIL import Image
    rng = np.random.RandomState(0)

    def add(label: str, n: int):
        (tmp_path / "images" / label).mkdir(parents=True, exist_ok=True)
        for _ in range(n):
            Image.fromarray(rng.randint(0, 256, (8, 8), dtype=np.uint8)).save(
                tmp_path / "images" / label / f"{len(list((tmp_path / 'images' / label).iterdir()))}.png")

    count = lambda ds: sum(len(a.ids) for a in ds.splits.values())  # noqa: E731
    add("a", 4)
    add("b", 4)
    assert count(data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")) == 8
    add("a", 6)
    again = data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    assert count(again) == 14 and again.classes == ["a", "b"]
    (tmp_path / "images" / "b" / "0.png").rename(tmp_path / "images" / "a" / "moved.png")
    moved = data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    assert {i: int(y) for a in moved.splits.values() for i, y in zip(a.ids, a.y)}["a/moved.png"] == 0


def test_preprocessing_cache_follows_the_decoders_revision(tmp_path, monkeypatch):
    """A folder cached before decode_rgb changed what it refuses is decoded again: from the old
    cache, a file the service now refuses would still be trained on."""
    from PIL import Image
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "images" / label / f"{i}.png")
    data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    # a GIF under the PNG's name, size and mtime: the folder's fingerprint cannot see it
    f = tmp_path / "images" / "a" / "0.png"
    st = f.stat()
    f.write_bytes(b"GIF89a".ljust(st.st_size, b"\0"))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")  # the cache of the same revision
    monkeypatch.setattr(data, "DECODE_REVISION", data.DECODE_REVISION + 1)
    with pytest.raises(ValueError, match="0.png"):
        data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
