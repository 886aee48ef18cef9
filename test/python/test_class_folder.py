"""What a user meets training on their own class folder (`--data DIR`, DIR/<class>/images) through
the CLI: a mistake in what they give (a missing path, a refused image, a bad value) is an error
line naming it and a non-zero exit, never a traceback, and never a run on a wrong split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medhash_model import cli

# one thread: the tests share a 2-core machine with training runs
TINY = ["--preset", "tiny", "--bits", "16", "--threads", "1"]


def folder(root: Path, counts: dict[str, int], seed: int = 0) -> Path:
    """A class folder of small grey PNGs, each class a different brightness."""
    rng = np.random.RandomState(seed)
    for k, (label, n) in enumerate(sorted(counts.items())):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            px = np.clip(rng.randint(0, 60, (12, 12)) + 50 * k, 0, 255).astype(np.uint8)
            Image.fromarray(px).save(root / label / f"{i}.png")
    return root


def refused(argv: list[str]) -> str:
    """The error message of a CLI run that must stop with one (exit status 1, no traceback)."""
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert isinstance(e.value.code, str), e.value.code
    return e.value.code


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDHASH_CACHE", str(tmp_path / "cache"))


def test_a_missing_path_or_a_file_is_an_error_naming_it(tmp_path):
    out = ["--out", str(tmp_path / "runs")]
    msg = refused(["train", "--data", str(tmp_path / "nothere"), *TINY, *out])
    assert msg.startswith("medhash_model train: error: ") and f"{tmp_path / 'nothere'}: no such file or folder" in msg
    (tmp_path / "notes.txt").write_text("x")
    assert "notes.txt: not a data set" in refused(["train", "--data", str(tmp_path / "notes.txt"), *TINY, *out])
    (tmp_path / "empty").mkdir()
    assert "empty: no class folders with" in refused(["train", "--data", str(tmp_path / "empty"), *TINY, *out])
    assert not (tmp_path / "runs").exists()


def test_a_corrupt_image_in_a_class_folder_is_an_error_naming_the_folder_and_the_file(tmp_path):
    src = folder(tmp_path / "images", {"a": 4, "b": 4})
    (src / "b" / "cut.png").write_bytes((src / "b" / "0.png").read_bytes()[:40])
    msg = refused(["train", "--data", str(src), *TINY, "--out", str(tmp_path / "runs")])
    assert msg.startswith(f"medhash_model train: error: {src}: b/cut.png: PNG is truncated")


@pytest.mark.parametrize("cmd, flag, value, words", [
    ("train", "--epochs", "-1", "argument --epochs: -1 is out of range: at least 0"),
    ("train", "--threads", "0", "argument --threads: 0 is out of range: at least 1"),
    ("train", "--seed", "-1", "argument --seed: -1 is out of range: 0 to 4294967295"),
    ("sweep", "--bits", "7", "argument --bits: invalid choice: 7"),
    ("sweep", "--seeds", "x", "argument --seeds: invalid int value: 'x'"),
    ("pipeline", "--ood-epochs", "0", "argument --ood-epochs: 0 is out of range: at least 1"),
    ("pipeline", "--ood-steps", "-5", "argument --ood-steps: -5 is out of range: at least 1"),
])
def test_a_value_out_of_range_is_a_usage_error_before_anything_runs(tmp_path, capsys, cmd, flag, value, words):
    """Before, --epochs -1 trained no epoch and reported the untrained model, sweep --bits 7 trained
    a 7-bit model, and --threads 0 or --seed -1 ended in a traceback after the data was read."""
    argv = [cmd, "--data", str(tmp_path / "images"), "--out", str(tmp_path / "runs"), flag, value]
    with pytest.raises(SystemExit) as e:
        cli.main(argv + (["--name", "x"] if cmd == "pipeline" else []))
    assert e.value.code == 2 and words in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("cmd", ["pipeline", "export"])
def test_a_model_of_that_name_is_not_overwritten_without_force(tmp_path, cmd):
    """Before, `pipeline --name mednist-darf-b64` replaced the shipped model after training, and
    `export` at once."""
    models = tmp_path / "models"
    files = [models / "x.onnx", models / "x.card.json", models / "golden" / "x.json"]
    files[2].parent.mkdir(parents=True)
    for f in files:
        f.write_text("shipped")
    argv = (["pipeline", "--data", str(tmp_path / "images"), *TINY, "--out", str(tmp_path / "runs"), "--name", "x", "--models", str(models)]
            if cmd == "pipeline" else ["export", "--run", str(tmp_path / "runs" / "r"), "--name", "x", "--out", str(models)])
    assert refused(argv) == f"model x exists: {', '.join(map(str, files))}; --force overwrites it, or give another --name"
    assert all(f.read_text() == "shipped" for f in files)
    # --force passes the check (what stops it then is the missing data or run)
    assert "exists" not in refused(argv + ["--force"])
    # one of the files is enough to refuse: a half-written export is still that model's
    files[0].unlink()
    files[1].unlink()
    assert refused(argv) == f"model x exists: {files[2]}; --force overwrites it, or give another --name"


def test_a_train_split_smaller_than_a_batch_still_trains():
    """A class folder of a few dozen images has fewer train images than the preset's batch: that is
    one smaller batch per epoch. It was zero steps (n // batch), a NaN loss and the untrained
    model evaluated, saved and exported."""
    import torch

    from medhash_model import data
    from medhash_model.presets import PRESETS
    from medhash_model.train import TrainConfig, train
    rng = np.random.RandomState(0)
    part = lambda n: data.Arrays(rng.rand(n, 1, 32, 32).astype(np.float16), np.arange(n) % 2, [str(i) for i in range(n)])  # noqa: E731
    ds = data.DataSet("few", ["a", "b"], {"train": part(10), "val": part(4), "db": part(4), "query": part(4)})
    p = PRESETS["tiny"]
    losses: list[float] = []
    torch.manual_seed(0)
    _, info = train(ds, TrainConfig(bits=16, epochs=2, batch=p["batch"], threads=1, max_steps_per_epoch=p["max_steps_per_epoch"],
                                    model=dict(p["model"])), log=lambda _l: None, on_step=lambda _s, loss: losses.append(loss))
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert info["best"]["epoch"] > 0


def png_in(split: str, start: int = 0) -> tuple[bytes, int]:
    """A small PNG whose md5 sends it to `split`, and the counter to continue from."""
    import hashlib
    import io

    from medhash_model.data import md5_split
    i = start
    while True:
        b = io.BytesIO()
        Image.fromarray(np.full((12, 12), i % 256, np.uint8) + np.eye(12, dtype=np.uint8) * (i // 256)).save(b, "PNG")
        i += 1
        if md5_split(hashlib.md5(b.getvalue()).hexdigest()) == split:
            return b.getvalue(), i


def place(root: Path, label: str, splits: list[str]) -> None:
    """Images of class `label` that go to the given splits, none the same as another class's."""
    (root / label).mkdir(parents=True, exist_ok=True)
    i = 1000 * (len(list(root.iterdir())) - 1)
    for k, s in enumerate(splits):
        b, i = png_in(s, i)
        (root / label / f"{k}.png").write_bytes(b)


def test_one_class_a_class_without_train_images_or_an_empty_split_is_refused_naming_it(tmp_path):
    """Before, a one-class folder trained and reported mAP 1.0 (every item relevant to every
    query), a class whose few images all went to db/query was in the model yet never trained on,
    and an empty query split gave NaN figures, each with exit 0."""
    out = ["--out", str(tmp_path / "runs")]
    one = folder(tmp_path / "one", {"only": 12})
    assert refused(["train", "--data", str(one), *TINY, *out]) == f"--data {one}: 1 class (only); retrieval needs at least two"
    few = tmp_path / "few"
    place(few, "big", ["train"] * 6 + ["val", "db", "db", "query"])
    place(few, "rare", ["db", "query"])
    msg = refused(["train", "--data", str(few), *TINY, *out])
    assert msg.startswith(f"--data {few}: class 'rare' has no train image (2 images: 0 train, 0 val, 1 db, 1 query)")
    assert msg.endswith("give it more images, or move its folder out")
    noq = tmp_path / "noq"
    place(noq, "a", ["train", "train", "val", "db"])
    place(noq, "b", ["train", "train", "val", "db"])
    assert refused(["train", "--data", str(noq), *TINY, *out]).startswith(
        f"--data {noq}: no query image (8 images: 4 train, 2 val, 2 db, 0 query)")
    assert not (tmp_path / "runs").exists()


def test_a_class_missing_from_an_evaluation_split_or_an_empty_folder_is_a_warning(tmp_path, capsys):
    src = tmp_path / "site"
    place(src, "a", ["train"] * 3 + ["val", "db", "query"])
    place(src, "b", ["train"] * 3 + ["db"])
    (src / "scans").mkdir()
    (src / "scans" / "x.tif").write_bytes(b"II*\0")
    (src / ".DS_Store").write_bytes(b"")
    cli.main(["train", "--data", str(src), *TINY, "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert f"warning: --data {src}: class 'b' has no val/query image (4 images: 3 train, 0 val, 1 db, 0 query)" in err
    assert f"warning: --data {src}: folder(s) 'scans' hold no .png/.jpg/.jpeg/.dcm image: not classes of this run, whose classes are ['a', 'b']" in err


def test_a_finished_run_of_other_data_in_the_run_folder_is_refused_not_reused(tmp_path, capsys):
    """The run folder is named by the data folder's name alone: a second site's `images` folder
    (or the same folder with images added) was skipped as done, and `pipeline` exported the first
    folder's model, with its classes, under the new name."""
    import json
    first = folder(tmp_path / "a" / "images", {"cat": 30, "dog": 30})
    second = folder(tmp_path / "b" / "images", {"eel": 30, "fox": 30, "gnu": 30}, seed=1)
    out = ["--out", str(tmp_path / "runs")]
    cli.main(["train", "--data", str(first), *TINY, *out])
    metrics = tmp_path / "runs" / "images" / "darf_sch-tiny-b16-s0" / "metrics.json"
    assert json.loads(metrics.read_text())["data_path"] == str(first)
    cli.main(["train", "--data", str(first), *TINY, *out])
    assert "skip " in capsys.readouterr().err
    msg = refused(["train", "--data", str(second), *TINY, *out])
    assert msg.startswith(f"{metrics.parent}: a finished run of other data ({first} as it was then) than --data {second}")
    assert "--force trains it again there" in msg
    folder(first, {"cow": 30}, seed=2)
    assert refused(["train", "--data", str(first), *TINY, *out]).startswith(f"{metrics.parent}: a finished run of other data")
    cli.main(["train", "--data", str(second), *TINY, *out, "--force"])
    assert json.loads(metrics.read_text())["data_path"] == str(second)


def test_pipeline_refuses_before_training_a_folder_the_ood_stage_cannot_be_fitted_on(tmp_path):
    """A class of one train image (a singular covariance) or a db split of fewer than k = 10
    codes (the k-NN score) trained, then ended the OOD stage or the export in a traceback."""
    out = ["--out", str(tmp_path / "runs"), "--models", str(tmp_path / "models"), "--name", "site"]
    one = tmp_path / "one"
    place(one, "a", ["train"] * 4 + ["val"] + ["db"] * 10 + ["query"])
    place(one, "b", ["train", "db", "query"])
    assert refused(["pipeline", "--data", str(one), *TINY, *out]) == (
        f"--data {one}: the OOD stage needs at least 2 train images per class; 'b' (1) has fewer: give them more images")
    few = tmp_path / "few"
    place(few, "a", ["train"] * 3 + ["val", "db", "db", "query"])
    place(few, "b", ["train"] * 3 + ["db", "db"])
    assert refused(["pipeline", "--data", str(few), *TINY, *out]) == (
        f"--data {few}: the OOD stage needs at least 10 db images (the k-NN score's 10th neighbour); it has 4: give it more images")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_a_stray_npz_beside_the_class_folders_leaves_them_class_folders(tmp_path, capsys):
    """A folder holding a .npz was read as a MedMNIST set whatever else it held: a site's class
    folders with a features.npz beside them ended in a KeyError traceback."""
    import json
    src = folder(tmp_path / "site", {"a": 30, "b": 30})
    np.savez(src / "features.npz", f=np.zeros(3))
    cli.main(["train", "--data", str(src), *TINY, "--out", str(tmp_path / "runs")])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["data"] == "site"
    alone = tmp_path / "alone"
    alone.mkdir()
    np.savez(alone / "features.npz", f=np.zeros(3))
    assert refused(["train", "--data", str(alone), *TINY, "--out", str(tmp_path / "runs")]).endswith(
        "features.npz: not a MedMNIST .npz (needs train_images, train_labels, val_images, val_labels, test_images, test_labels; holds f)")
