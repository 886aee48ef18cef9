"""Tests of the model package (run from models/: `/usr/bin/python3 -m pytest ../test/python -q`):
the loss terms behave as the method needs (a quantization gradient, fingerprint-weighted pull and
push), the distance is invariant where it must be, tie-aware metrics are exact expectations, a
short training run learns, and a tiny model exports with the served output names."""
from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from medhash_model import losses, metrics
from medhash_model.darf import ModelConfig, build
from medhash_model.export import OUTPUTS, export_onnx
from medhash_model.ood import PARTS, ClassMahalanobis, Decoder, Gram, Mahalanobis, OODHead

# one thread: the tests share a 2-core machine with training runs, and oversubscribed OpenMP
# threads spin (the 20-step run took 137 s on 2 threads under load, 5 s on 1)
THREADS = 1
torch.set_num_threads(THREADS)
# MEDHASH_DATA, else the nearest ancestor's shared/data (a worktree may sit deeper than ../shared)
DATA = Path(os.environ.get("MEDHASH_DATA") or next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()), "shared/data"))


def grad_of(fn, u: torch.Tensor) -> torch.Tensor:
    u = u.clone().requires_grad_(True)
    fn(u).backward()
    return u.grad


def test_quantization_has_a_gradient():
    # the released term was constant in u, so it never moved codes towards ±1
    u = torch.tensor([[0.1, -0.5, 2.0, -3.0]])
    g = grad_of(losses.quantization, u)
    assert (g != 0).all()
    assert losses.quantization(torch.tensor([[1.0, -1.0]])) < losses.quantization(u)


def pair_grad(same: bool, s: float) -> float:
    torch.manual_seed(0)
    u = torch.randn(2, 16)
    y = torch.tensor([0, 0 if same else 1])
    S = torch.tensor([[1.0, s], [s, 1.0]])
    return grad_of(lambda v: losses.sch_contrastive(v, y, S), u).norm().item()


def test_sch_same_class_pull_grows_with_fingerprint_similarity():
    assert pair_grad(True, 0.9) > pair_grad(True, 0.1) > 0


def test_sch_different_class_push_grows_with_fingerprint_similarity():
    assert pair_grad(False, 0.9) > pair_grad(False, 0.1) > 0


def test_pearson_distance_ignores_scale_and_shift():
    torch.manual_seed(1)
    u = torch.randn(5, 32)
    a = torch.tensor([[0.5], [2.0], [3.0], [10.0], [0.1]])
    b = torch.tensor([[1.0], [-4.0], [0.0], [7.0], [-0.3]])
    assert torch.allclose(losses.pearson(u), losses.pearson(a * u + b), atol=1e-5)
    un = u.numpy()
    assert np.allclose(metrics.pearson_rows(un, un), metrics.pearson_rows((a * u + b).numpy(), un), atol=1e-6)


def sorting_orders(dist: np.ndarray) -> list[np.ndarray]:
    """Every order that sorts `dist`: all orders inside each group of equal distance."""
    perms = (np.array(p) for p in itertools.permutations(range(len(dist))))
    return [o for o in perms if np.all(np.diff(dist[o]) >= 0)]


@pytest.mark.parametrize("seed", range(12))
def test_tie_aware_metrics_equal_brute_force(seed):
    gen = np.random.RandomState(seed)
    n = 7
    dist = gen.randint(0, 3, n)          # three distances over seven items: many ties
    rel = gen.rand(n) < 0.5
    rel[gen.randint(n)] = True            # at least one relevant item
    orders = sorting_orders(dist)
    for k in (1, 3, 5, 7):
        ap = np.mean([metrics.ap_at_k_ranked(o, rel, k) for o in orders])
        prec = np.mean([rel[o[:k]].sum() / k for o in orders])
        assert metrics.tie_aware_ap_at_k(dist, rel, k) == pytest.approx(ap, abs=1e-12)
        assert metrics.tie_aware_precision_at_k(dist, rel, k) == pytest.approx(prec, abs=1e-12)


def test_twenty_steps_of_training_lower_the_loss():
    from medhash_model import data
    from medhash_model.presets import PRESETS
    from medhash_model.train import TrainConfig, train
    source = DATA / "pneumoniamnist"
    if not source.exists():
        pytest.skip(f"{source} missing (set MEDHASH_DATA)")
    p = PRESETS["tiny"]
    ds = data.load(source, p["size"], 1)
    # 20 steps of 32 see 640 images; smaller splits keep the end-of-run validation short
    for name, n in (("train", 640), ("val", 128)):
        a = ds.splits[name]
        ds.splits[name] = data.Arrays(a.x[:n], a.y[:n], a.ids[:n])
    steps: list[float] = []
    tc = TrainConfig(method="darf_sch", bits=16, epochs=p["epochs"], batch=p["batch"], threads=THREADS,
                     max_steps_per_epoch=p["max_steps_per_epoch"], model=dict(p["model"]))
    train(ds, tc, log=lambda _line: None, on_step=lambda _step, loss: steps.append(loss))
    assert len(steps) == 20
    assert np.mean(steps[-5:]) < np.mean(steps[:5])


def test_tiny_model_exports_with_named_outputs(tmp_path):
    from medhash_model.presets import PRESETS
    torch.manual_seed(0)
    cfg = ModelConfig(n_classes=3, bits=16, size=32, channels=1, **PRESETS["tiny"]["model"])
    model = build(cfg).eval()
    feats = np.random.RandomState(0).randn(60, model.feat_dim)
    maha = Mahalanobis.fit(feats, np.arange(60) % 3, 3)
    n_stats = 2 * (cfg.widths[1] + cfg.widths[3])
    st = np.random.RandomState(1).randn(90, n_stats)
    stats = Mahalanobis.fit(st, np.zeros(90, dtype=np.int64), 1)
    qda = ClassMahalanobis.fit(feats, np.arange(60) % 3, 3)
    stats_qda = ClassMahalanobis.fit(st, np.arange(90) % 3, 3)
    c = cfg.widths[1]
    gram = Gram.fit(np.random.RandomState(2).randn(60, c * (c - 1) // 2), np.arange(60) % 3, 3, channels=c, dims=8)
    unit = {p: [0.0, 1.0] for p in PARTS}
    head = OODHead(Decoder(cfg.widths[3], cfg.channels, cfg.size), maha, stats, qda, stats_qda, unit, ("maha", "stats_qda", "gram"),
                   gram=gram, rule="mean").eval()
    proto = export_onnx(model, head, tmp_path / "tiny.onnx")
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert proto.opset_import[0].version == 17
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"
    # the per-class OOD matrices stay int8 in the file (constant folding would store them as float32)
    int8 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert {"head.qda.q", "head.stats_qda.q", "head.gram.maha.q"} <= int8


def test_pipeline_trains_exports_and_evaluates_a_new_class_folder(tmp_path, monkeypatch, capsys):
    """The CLI path a site takes with its own images: class folders in, ONNX + card + metrics out."""
    import json

    from medhash_model import cli, data
    folder = tmp_path / "images"
    per_class: dict[str, int] = {}
    for r in data.records(DATA / "brain_tumor_mri"):
        if r.label in ("glioma", "notumor", "pituitary") and per_class.get(r.label, 0) < 90:
            per_class[r.label] = per_class.get(r.label, 0) + 1
            (folder / r.label).mkdir(parents=True, exist_ok=True)
            (folder / r.label / Path(r.id).name).write_bytes(r.load())
    monkeypatch.setenv("MEDHASH_CACHE", str(tmp_path / "cache"))
    cli.main(["pipeline", "--data", str(folder), "--preset", "tiny", "--bits", "16", "--threads", str(THREADS),
              "--out", str(tmp_path / "runs"), "--models", str(tmp_path / "models"), "--name", "site-b16",
              "--ood-epochs", "1", "--ood-steps", "3"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["classes"] == ["glioma", "notumor", "pituitary"]
    assert 0.0 < summary["map100"] <= 1.0 and summary["ood_threshold"] > 0
    card = json.loads((tmp_path / "models" / "site-b16.card.json").read_text())
    assert card["bits"] == 16 and card["training"]["data"] == "images"
    assert onnx.load(str(tmp_path / "models" / "site-b16.onnx")).graph.output[0].name == "u"
    assert (tmp_path / "models" / "golden" / "site-b16.json").exists()
    # both feature scores of the OOD head measure the distance to the nearest of the 3 classes
    head = torch.load(next((tmp_path / "runs").rglob("ood.pt")))["state"]
    assert head["maha.wmu"].shape[0] == 3 and head["stats.wmu"].shape[0] == 3
    # the run keeps the codes its metrics came from, and `report --tag` writes beside the main report
    run = next((tmp_path / "runs").rglob("metrics.json")).parent
    codes, metrics = np.load(run / "codes.npz"), json.loads((run / "metrics.json").read_text())
    assert codes["q_u"].shape == (metrics["n_query"], 16) and codes["db_u"].shape == (metrics["n_db"], 16)
    assert metrics["device"] == "cpu"
    from medhash_model import report
    monkeypatch.setattr(report, "DOCS", tmp_path / "docs")
    cli.main(["report", "--runs", str(tmp_path / "runs"), "--tag", "site", "--no-plots"])
    assert sorted(p.name for p in (tmp_path / "docs").rglob("*")) == ["RESULTS-site.md", "results", "retrieval-site.json"]
    rows = json.loads((tmp_path / "docs" / "results" / "retrieval-site.json").read_text())
    assert [(r["method"], r["bits"]) for r in rows] == [("darf_sch", 16)]
