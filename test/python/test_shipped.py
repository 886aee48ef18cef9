"""A shipped model rebuilt in PyTorch from its ONNX file (shipped.py) and the OOD frontier
analysis built on it (ood_frontier.py). Run from models/: `/usr/bin/python3 -m pytest
../test/python -q -k shipped`."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medhash_model import ood, ood_eval, ood_frontier, shipped
from medhash_model.card import read_card
from medhash_model.metrics import pack_bits
from medhash_model.preprocess import preprocess_bytes

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_the_shipped_mednist_model_rebuilt_from_onnx_gives_its_golden_outputs():
    model, head, card = shipped.load(MODELS / "mednist-darf-b64.onnx")
    assert head.parts == tuple(card["ood"]["parts"])
    golden = json.loads((MODELS / "golden" / "mednist-darf-b64.json").read_text())
    assert golden["model_id"] == card["model_id"]
    x = torch.from_numpy(np.stack([np.frombuffer(base64.b64decode(it["input"]), dtype="<f4").reshape(golden["input_shape"])
                                   for it in golden["items"]]).copy())
    with torch.no_grad():
        o = model(x)
        s = head(x, o["shallow"], o["deep"], o["features"])
    for i, it in enumerate(golden["items"]):
        u = np.array(json.loads(it["u"]) if isinstance(it["u"], str) else it["u"])
        assert np.abs(o["u"][i].numpy() - u).max() <= 1e-4
        assert pack_bits(o["u"][i:i + 1].numpy())[0].tobytes().hex() == it["bits_hex"]
        assert np.abs(o["logits"][i].numpy() - np.array(it["logits"])).max() <= 1e-4
        assert abs(float(s["combined"][i]) - it["ood_score"]) <= 1e-4


def test_the_shipped_head_joins_its_parts_by_the_cards_rule():
    _, head, card = shipped.load(MODELS / "mednist-darf-b64.onnx")
    assert head.rule == card["ood"]["rule"] and card["ood"]["score"].startswith(f"ood_score = {head.rule} of")
    # a card from before head format 5 names no rule: its head took the max
    older = {**card, "ood": {k: v for k, v in card["ood"].items() if k != "rule"}}
    assert shipped.load(MODELS / "mednist-darf-b64.onnx", older)[1].rule == "max"


def test_unpack_gives_a_run_folder_the_ood_stage_and_export_read(tmp_path):
    run = shipped.unpack(MODELS / "mednist-darf-b64.onnx", tmp_path / "run", tmp_path / "data")
    model, head, card = shipped.load(MODELS / "mednist-darf-b64.onnx")
    unpacked, ck = ood.load_run_encoder(run)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(unpacked(x)["u"], model(x)["u"])
    assert ck["classes"] == card["classes"] and ck["data_path"] == str((tmp_path / "data" / "mednist").resolve())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["map100"] == card["metrics"]["map100"] and metrics["method"] == card["training"]["method"]
    # the decoder is kept for `ood --reuse-decoder`, but the head is not one load_run accepts
    saved = torch.load(run / "ood.pt")
    assert torch.equal(saved["state"]["decoder.out.weight"], head.state_dict()["decoder.out.weight"])
    assert saved["info"]["decoder_steps"] == card["ood"]["decoder_steps"]
    with pytest.raises(SystemExit, match="refit it"):
        ood.load_run(run)


def test_an_export_made_with_constant_folding_is_refused():
    with pytest.raises(ValueError, match="constant folding"):
        shipped.load(MODELS / "brain_tumor_mri-darf-b64.onnx")


def toy_oodset(tmp_path) -> tuple[Path, dict, list[bytes], dict[str, bytes]]:
    """An OOD sets folder of one tar set and one set of a data set's images (tmp_path/data/photos):
    (folder, manifest, the tar's PNGs, the data set's image bytes by id)."""
    rng = np.random.RandomState(0)
    src = tmp_path / "data" / "photos"
    raw = {}
    for label in ("a", "b"):
        (src / label).mkdir(parents=True)
        arr = rng.randint(0, 256, (40, 40), dtype=np.uint8)
        Image.fromarray(arr, "L").save(src / label / "x.png")
        raw[f"{label}/x.png"] = (src / label / "x.png").read_bytes()
    folder = tmp_path / "sets"
    pngs = [ood_eval.png_bytes(rng.randint(0, 256, (1, 32, 32), dtype=np.uint8)) for _ in range(3)]
    entries = [ood_eval.write_oodset(folder, "attack:toy", pngs, {"source": "toy:query"}),
               {"set": "near:photos", "source": "photos", "ids": ["b/x.png", "a/x.png"]}]
    manifest = {"format": ood_eval.OODSET_FORMAT, "version": ood_eval.OODSET_VERSION, "size": 32, "channels": 1, "sets": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder, manifest, pngs, raw


def test_read_oodset_reads_tar_and_source_entries_and_rejects_other_formats(tmp_path, monkeypatch):
    folder, manifest, pngs, raw = toy_oodset(tmp_path)
    monkeypatch.setenv("MEDHASH_CACHE", str(tmp_path / "cache"))
    _, sets = ood_eval.read_oodset(folder, tmp_path / "data")
    assert list(sets) == ["attack:toy", "near:photos"]
    assert np.array_equal(sets["attack:toy"], np.stack([preprocess_bytes(b, 32, 1) for b in pngs]))
    # a data set's pixels come from its preprocessing cache, stored as float16
    want = np.stack([preprocess_bytes(raw[i], 32, 1) for i in ("b/x.png", "a/x.png")])
    assert np.abs(sets["near:photos"] - want).max() <= 1e-3
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(SystemExit, match="medhash-oodset v1"):
        ood_eval.read_oodset(folder, tmp_path / "data")


@pytest.mark.parametrize("change, words", [
    (lambda m: m.pop("size"), "size must be a positive integer"),
    (lambda m: m.update(channels="1"), "channels must be 1 or 3"),
    (lambda m: m.pop("sets"), "sets must be a non-empty list"),
    (lambda m: m["sets"][0].pop("set"), "sets[0].set must be a non-empty string"),
    (lambda m: m["sets"][1].pop("source"), "sets[1].source must be a non-empty string"),
    (lambda m: m["sets"][1].pop("ids"), "sets[1].ids must be a non-empty list of strings"),
    (lambda m: m["sets"][1].update(ids=["a/x.png", "c/y.png"]), "sets[1].ids: 1 not images of DATA/photos, the first 'c/y.png'"),
])
def test_read_oodset_refuses_a_missing_or_wrong_field_naming_the_file_and_the_field(tmp_path, monkeypatch, change, words):
    """Before, a missing field was a bare KeyError ('size'), naming neither the file nor the field."""
    folder, manifest, _, _ = toy_oodset(tmp_path)
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MEDHASH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as e:
        ood_eval.read_oodset(folder, tmp_path / "data")
    assert e.value.code == f"{folder / 'manifest.json'}: {words.replace('DATA', str(tmp_path / 'data'))}"


def test_frontier_rows_cover_every_subset_and_name_the_goals_each_misses():
    rng = np.random.RandomState(1)
    n = 400
    # part `a` sees the far set only, part `b` the attack only; the outliers favour `a`
    ident = lambda: {"a": rng.randn(n), "b": rng.randn(n)}  # noqa: E731
    scores = {"val": ident(), "query": ident(),
              "blobs": {"a": rng.randn(n) + 4, "b": rng.randn(n)},
              "far:x": {"a": rng.randn(n) + 6, "b": rng.randn(n)},
              "near:y": {"a": rng.randn(n) + 6, "b": rng.randn(n) + 6},
              "attack:z": {"a": rng.randn(n), "b": rng.randn(n) + 6}}
    chosen, rows = ood_frontier.subset_table(scores, ["a", "b"], ["blobs"], ["far:x", "near:y", "attack:z"])
    assert chosen == ["a"] and [r["parts"] for r in rows] == [["a"], ["b"], ["a", "b"]]
    baselines = {"far:x": 0.9, "near:y": 0.9, "attack:z": 0.9}
    g = {tuple(r["parts"]): ood_frontier.goals(r, baselines) for r in rows}
    assert g[("a",)]["far_auroc"] and g[("a",)]["far_flagged"] and g[("a",)]["behind_a_baseline"] == ["attack:z"]
    assert not g[("b",)]["far_auroc"] and g[("b",)]["behind_a_baseline"] == ["far:x"]
    assert g[("a", "b")] == {"far_auroc": True, "far_flagged": True, "near_auroc": True, "behind_a_baseline": []}


def test_frontier_rules_join_the_z_scores_their_own_way_and_the_table_shows_each():
    rng = np.random.RandomState(2)
    n = 300
    ident = lambda: {"a": rng.randn(n), "b": rng.randn(n)}  # noqa: E731
    scores = {"val": ident(), "query": ident(), "blobs": {"a": rng.randn(n) + 3, "b": rng.randn(n) + 1},
              "far:x": {"a": rng.randn(n) + 1, "b": rng.randn(n) + 1}, "near:y": {"a": rng.randn(n) + 5, "b": rng.randn(n)}}
    eval_sets = ["far:x", "near:y"]
    tables = {rule: ood_frontier.subset_table(scores, ["a", "b"], ["blobs"], eval_sets, rule)[1] for rule in ood_frontier.RULES}
    z = {k: {p: (v[p] - scores["val"][p].mean()) / (scores["val"][p].std() + 1e-12) for p in "ab"} for k, v in scores.items()}
    for rule, join in (("max", np.maximum), ("mean", lambda a, b: (a + b) / 2)):
        both = [r for r in tables[rule] if r["parts"] == ["a", "b"]][0]
        assert both["sets"]["far:x"]["auroc"] == pytest.approx(ood.auroc(join(z["query"]["a"], z["query"]["b"]), join(z["far:x"]["a"], z["far:x"]["b"])))
    # a shift both parts see a little is clearer in their mean than in their max
    mean_ab, max_ab = ([r for r in tables[k] if r["parts"] == ["a", "b"]][0]["sets"]["far:x"]["auroc"] for k in ("mean", "max"))
    assert mean_ab > max_ab
    baselines = {"far:x": 0.5, "near:y": 0.5}
    for t in tables.values():
        for r in t:
            r["goals"] = ood_frontier.goals(r, baselines)
    doc = {"model_id": "toy@0", "shipped_parts": ["a"], "extra": {}, "chosen": {"head": ["a"], "all": ["a"]},
           "baselines": {e: {b: 0.5 for b in ood_frontier.BASELINES} for e in eval_sets}, "subsets": tables["max"],
           "rules": {k: ood_frontier.rule_summary(t, ["a"]) for k, t in tables.items()}}
    text = ood_frontier.markdown(doc)
    rule_rows = [r for r in text.split("Other rules")[1].split("Ahead of every")[0].splitlines() if r.startswith("| ")][1:]
    # per rule: validation among the head's parts, among all candidates, and the fewest goals missed
    assert [r.split(" | ")[0] for r in rule_rows] == [f"| {k}" for k in ood_frontier.RULES for _ in range(3)]
    best_rule, best_row = max(((k, ood_frontier.chosen_row(t, ["a", "b"])) for k, t in tables.items()), key=lambda kr: kr[1]["val_mean"])
    assert (f"among all candidates: {best_rule} of {' + '.join(best_row['parts'])} ({best_row['val_mean']:.4f})."
            in text.split("Highest validation AUROC over rules and subsets")[1])
    assert all(r.count("|") == rule_rows[0].count("|") == text.split("Other rules")[1].splitlines()[3].count("|") for r in rule_rows)
    ahead = [r for k, t in tables.items() for r in t if not r["goals"]["behind_a_baseline"]]
    assert f"any rule ({len(ahead)}; the 10 best by validation)" in text and len(ahead) > 0


def test_thumbnails_average_each_block():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    assert np.allclose(ood_frontier.thumbnails(x, 2), [[2.5, 4.5, 10.5, 12.5]])


def test_squeezing_scores_how_far_the_code_moves_and_smoothing_keeps_the_size():
    u = np.random.RandomState(2).randn(3, 16)
    assert np.allclose(ood_frontier.squeeze_score(u, u), 0, atol=1e-6)
    assert np.allclose(ood_frontier.squeeze_score(u, -u), 2, atol=1e-6)
    flat = np.full((1, 1, 8, 8), 0.3, dtype=np.float32)
    edge = np.zeros((1, 1, 8, 8), dtype=np.float32)
    edge[..., 4:] = 1
    for side in (2, 3):
        assert np.allclose(ood_frontier.smooth(flat, side), flat)
        out = ood_frontier.smooth(edge, side)
        assert out.shape == edge.shape and 0 < out[0, 0, 0, 4] < 1


@pytest.mark.parametrize("change, words", [({"format": "other-card"}, "format"), ({"version": 2}, "version 2")])
def test_a_card_of_another_format_or_a_newer_version_is_refused(tmp_path, change, words):
    card = json.loads((MODELS / "mednist-darf-b64.card.json").read_text())
    with pytest.raises(ValueError, match=words):
        shipped.load(MODELS / "mednist-darf-b64.onnx", {**card, **change})
    # the torch-free reader quantize.py uses: it names the file
    path = tmp_path / "m.card.json"
    path.write_text(json.dumps({**card, **change}))
    with pytest.raises(ValueError, match=f"{path}.*{words}"):
        read_card(path)


def test_a_card_beside_another_models_onnx_is_refused(tmp_path):
    card = json.loads((MODELS / "mednist-darf-b64.card.json").read_text())
    with pytest.raises(ValueError, match="sha256"):
        shipped.load(MODELS / "mednist-darf-b64.onnx", {**card, "sha256": "0" * 64})
