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
