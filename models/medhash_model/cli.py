"""Command line of the model side: `python -m medhash_model <command>`.
  train   one run (method, data, bits, seed, preset) -> runs/<data>/<run>/ and runs/results.jsonl
  sweep   many runs, resumable (a run whose metrics.json exists is skipped)
  ood     second stage: reconstruction decoder on frozen features, OOD scores, thresholds on val
  ood-eval  OOD evaluation (far, near, attacked, corrupted sets) -> docs/results/ood.json, models/oodsets/
  ood-frontier  every subset of a shipped model's OOD parts (and candidate parts) against the OOD goals (docs/OOD.md)
  export  ONNX (opset 17) + model card JSON of a trained run
  unpack  a run folder rebuilt from a shipped model, to refit and re-export its OOD head
  pipeline  train, OOD stage, export and evaluation of one model in one go (e.g. a new class folder)
  codes   encode a split to JSONL codes (id, packed hex code, label) for `medhash index`
  report  tables (docs/RESULTS.md), docs/results/retrieval.json, plots
int8 variants have their own entry, `python -m medhash_model.quantize`: it must run without torch."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import data as data_mod
from .dicom import DicomError
from .presets import PRESETS
from .train import METHODS, TrainConfig, device_name, resolve_device, test_eval, train

ROOT = Path(__file__).resolve().parents[2]


def data_root(given: str | None = None) -> Path:
    """Where the data sets live: --data-root, else $MEDHASH_DATA (a git worktree does not sit
    beside ../shared), else ../shared/data."""
    return Path(given or os.environ.get("MEDHASH_DATA", ROOT.parent / "shared" / "data"))


def int_in(lo: int, hi: int | None = None):
    """An argparse type: an integer in [lo, hi]. Out of range is a usage error, not a run of
    no epochs (range(-1) is empty), a traceback from torch or numpy, or a 7-bit model."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is out of range: " + (f"{lo} to {hi}" if hi is not None else f"at least {lo}"))
        return v
    return parse


BITS = (16, 32, 64, 128, 256)
SEED = int_in(0, 2 ** 32 - 1)  # numpy's seed range


def run_dir(out: Path, data_name: str, method: str, bits: int, seed: int, preset: str) -> Path:
    return out / data_name / f"{method}-{preset}-b{bits}-s{seed}"


def load_data(path: str, preset: str, channels: int | None, holdout: list[str] | None = None) -> data_mod.DataSet:
    """The data set a run trains on; `holdout` classes are left out entirely (kept unseen as near
    OOD for `ood-eval`), and the run is named `SET-without-A-B` so it never mixes with full runs."""
    size = PRESETS[preset]["size"]
    if channels is None:
        channels = 3 if Path(path).name.startswith("kather") else 1
    try:
        ds = data_mod.load(path, size, channels)
    except DicomError as e:
        # the refused image is named relative to the folder: say which folder
        raise data_mod.DataError(f"{path}: {e}") from None
    if holdout:
        unknown = sorted(set(holdout) - set(ds.classes))
        if unknown or len(set(holdout)) >= len(ds.classes) - 1:
            raise SystemExit(f"--holdout: {unknown or holdout} — name classes of {ds.classes}, keeping at least two")
        keep = [c for c in ds.classes if c not in holdout]
        ds = data_mod.known_only(data_mod.load(path, size, channels, classes=keep), f"{ds.name}-without-{'-'.join(sorted(holdout))}")
    check_splits(ds, path)
    empty = data_mod.empty_classes(path)
    if empty:
        print(f"warning: --data {path}: folder(s) {', '.join(map(repr, empty))} hold no {'/'.join(data_mod.IMAGE_EXT)} image: "
              f"not classes of this run, whose classes are {ds.classes}", file=sys.stderr)
    return ds


def check_splits(ds: data_mod.DataSet, path: str) -> None:
    """Refuses a data set a run cannot be honest on, naming why: one class (every item relevant to
    every query), a class without a train image (never learnt), or an empty val, db or query split
    (no checkpoint choice, or no measure). A class folder is split by the md5 of each file, so a
    class of a few images may miss a split by chance. A class missing from val, db or query only
    warns: the figures then say nothing of it there."""
    counts = {s: np.bincount(a.y[a.y >= 0], minlength=len(ds.classes)) for s, a in ds.splits.items()}
    rule = "(a file goes to a split by the md5 of its bytes: 60 % train, 10 % val, 20 % db, 10 % query)"

    def tally(i=None) -> str:
        n = {s: int(c.sum() if i is None else c[i]) for s, c in counts.items()}
        return f"{sum(n.values())} images: " + ", ".join(f"{n[s]} {s}" for s in data_mod.SPLITS)
    if len(ds.classes) < 2:
        raise SystemExit(f"--data {path}: {len(ds.classes)} class ({', '.join(ds.classes)}); retrieval needs at least two")
    for i, c in enumerate(ds.classes):
        if counts["train"][i] == 0:
            raise SystemExit(f"--data {path}: class {c!r} has no train image ({tally(i)}) {rule}: give it more images, or move its folder out")
    for s in ("val", "db", "query"):
        if counts[s].sum() == 0:
            raise SystemExit(f"--data {path}: no {s} image ({tally()}) {rule}: it needs more images")
    for i, c in enumerate(ds.classes):
        missing = [s for s in ("val", "db", "query") if counts[s][i] == 0]
        if missing:
            print(f"warning: --data {path}: class {c!r} has no {'/'.join(missing)} image ({tally(i)}); "
                  "the figures say nothing of it there", file=sys.stderr)


def do_train(args, method: str, bits: int, seed: int, ds=None) -> Path:
    p = PRESETS[args.preset]
    ds = ds or load_data(args.data, args.preset, args.channels, args.holdout)
    rd = run_dir(Path(args.out), ds.name, method, bits, seed, args.preset)
    # the run folder is named by the data's folder name only: another folder of that name, changed
    # files or other --channels would otherwise reuse (and pipeline export) a model of other data
    data_key = data_mod.source_key(args.data, p["size"], ds.splits["train"].x.shape[1])
    if (rd / "metrics.json").exists() and not getattr(args, "force", False):
        done = json.loads((rd / "metrics.json").read_text())
        if done.get("data_key", data_key) != data_key:
            raise SystemExit(f"{rd}: a finished run of other data ({done['data_path']} as it was then) than --data {args.data} "
                             "(another folder, changed files or other --channels); --force trains it again there, "
                             "--out puts the new run elsewhere")
        print(f"skip {rd} (done)", file=sys.stderr)
        return rd
    rd.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    tc = TrainConfig(method=method, bits=bits, seed=seed, epochs=args.epochs or p["epochs"], threads=args.threads,
                     batch=p.get("batch", 64), lr=p.get("lr", 1e-3), device=device,
                     max_steps_per_epoch=p["max_steps_per_epoch"], model=dict(p["model"]))
    with open(rd / "log.txt", "w") as logf:
        def log(line):
            print(f"[{ds.name} {method} b{bits} s{seed}] {line}", file=sys.stderr, flush=True)
            logf.write(line + "\n")
            logf.flush()
        model, info = train(ds, tc, log)
    res, codes = test_eval(model, ds, bits)
    per_query = res.pop("ap100_per_query")
    # codes.npz is what report's plots read, so they never need the model or the data again
    np.savez(rd / "codes.npz", **codes, classes=np.array(ds.classes))
    torch.save({"state": {k: v.cpu() for k, v in model.state_dict().items()}, "config": info["config"], "classes": ds.classes,
                "data": ds.name, "data_path": str(Path(args.data).resolve()), "preset": args.preset,
                "holdout": sorted(args.holdout or [])}, rd / "model.pt")
    np.save(rd / "ap100_per_query.npy", np.array(per_query))
    metrics = {"data": ds.name, "data_path": str(Path(args.data).resolve()), "data_key": data_key,
               "method": method, "bits": bits, "seed": seed, "preset": args.preset,
               **res, "best": info["best"], "train_seconds": info["train_seconds"], "device": device_name(device),
               "history": info["history"],
               "command": "cd models && python3 -m medhash_model " + " ".join(sys.argv[1:])}
    (rd / "metrics.json").write_text(json.dumps(metrics, indent=1))
    with open(Path(args.out) / "results.jsonl", "a") as f:
        f.write(json.dumps({k: v for k, v in metrics.items() if k != "history"}) + "\n")
    print(json.dumps({k: metrics[k] for k in ("data", "method", "bits", "seed", "map100", "map1000", "p10")}))
    return rd


def cmd_train(args):
    do_train(args, args.method, args.bits, args.seed)


def cmd_sweep(args):
    ds = load_data(args.data, args.preset, args.channels, args.holdout)
    for bits in args.bits:
        for seed in args.seeds:
            for method in args.methods:
                do_train(args, method, bits, seed, ds)


def cmd_pipeline(args):
    """One model end to end: train (checkpoint on val, tie-aware evaluation of query vs db), fit
    the OOD stage, export ONNX + card + golden file. Prints the card's name, metrics and OOD threshold."""
    from .export import export_run, refuse_overwrite
    from .ood import check_data, fit_run
    # before training, not after its minutes or hours
    refuse_overwrite(args.name, Path(args.models), args.force)
    ds = load_data(args.data, args.preset, args.channels, args.holdout)
    check_data(ds, f"--data {args.data}")
    rd = do_train(args, args.method, args.bits, args.seed, ds)
    fit_run(rd, epochs=args.ood_epochs, steps=args.ood_steps)
    card = export_run(rd, args.name, Path(args.models), args.force)
    print(json.dumps({"model": card["name"], "onnx": str(Path(args.models) / card["onnx"]), "bits": card["bits"],
                      "classes": card["classes"], **card["metrics"], "ood_threshold": card["ood"]["threshold"]}))


def cmd_codes(args):
    """Encode one split of a run's data set to a JSONL codes file that `medhash index` reads."""
    from .metrics import pack_bits
    from .ood import load_run, run_data
    from .train import encode
    torch.set_num_threads(2)
    model, ck, _ = load_run(Path(args.run))
    ds = run_data(ck, model.cfg.size, model.cfg.channels)
    part = ds.splits[args.split]
    u = encode(model, part.x)["u"]
    packed = pack_bits(u)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for i, item_id in enumerate(part.ids):
            meta = {"label": ds.classes[part.y[i]], "source_uri": f"{ds.name}/{item_id}"}
            f.write(json.dumps({"id": item_id, "code": packed[i].tobytes().hex(), "metadata": meta}) + "\n")
    print(f"{len(part.ids)} codes -> {out}", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="medhash_model")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--data", required=True, help="a ../shared/data set, a class folder, or an .npz")
        p.add_argument("--preset", default="cpu64", choices=sorted(PRESETS))
        p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="default: 3 for kather*, else 1")
        p.add_argument("--epochs", type=int_in(0), default=0, help="override the preset's epochs (0: the preset's)")
        p.add_argument("--out", default=str(ROOT / "runs"))
        p.add_argument("--force", action="store_true",
                       help="train again over a finished run (pipeline: and overwrite model --name in --models)")
        p.add_argument("--threads", type=int_in(1), default=2, help="torch threads (this machine has 2 cores)")
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                       help="where training and encoding run (auto: CUDA when present); metrics are computed on the CPU")
        p.add_argument("--holdout", nargs="+", default=None, metavar="CLASS",
                       help="leave these classes out of training and evaluation (near OOD for ood-eval)")

    p = sub.add_parser("train", help="one run")
    common(p)
    p.add_argument("--method", default="darf_sch", choices=sorted(METHODS))
    p.add_argument("--bits", type=int, default=64, choices=BITS)
    p.add_argument("--seed", type=SEED, default=0)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("sweep", help="methods x bits x seeds, resumable")
    common(p)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=sorted(METHODS))
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64], choices=BITS)
    p.add_argument("--seeds", nargs="+", type=SEED, default=[0, 1, 2])
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("pipeline", help="train + OOD stage + export + evaluation of one model")
    common(p)
    p.add_argument("--name", required=True, help="the exported model's name (NAME.onnx, NAME.card.json)")
    p.add_argument("--models", default=str(ROOT / "models"), help="where the model goes (default: models/)")
    p.add_argument("--method", default="darf_sch", choices=sorted(METHODS))
    p.add_argument("--bits", type=int, default=64, choices=BITS)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--ood-epochs", type=int_in(1), default=3)
    p.add_argument("--ood-steps", type=int_in(1), default=150)
    p.set_defaults(fn=cmd_pipeline)

    p = sub.add_parser("codes", help="encode a split of a run's data set to JSONL codes for `medhash index`")
    p.add_argument("--run", required=True)
    p.add_argument("--split", default="db", choices=("train", "val", "db", "query"))
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_codes)

    for name in ("ood", "ood_eval", "ood_frontier", "export", "shipped", "report"):
        try:
            __import__(f"medhash_model.{name}", fromlist=["add_parser"]).add_parser(sub)
        except ModuleNotFoundError:
            pass

    args = ap.parse_args(argv)
    try:
        args.fn(args)
    except (data_mod.DataError, DicomError, OSError) as e:
        # what the user gave cannot be read (a missing or wrong path, a refused image): the
        # message names it; a traceback would bury it
        raise SystemExit(f"medhash_model {args.cmd}: error: {e}") from None


if __name__ == "__main__":
    main()
