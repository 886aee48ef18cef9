"""OOD evaluation metrics on toy scores (fast; run from models/:
`/usr/bin/python3 -m pytest ../test/python -q -k ood_eval`). OOD is the positive class."""
from __future__ import annotations

import io
import tarfile
import types

import numpy as np
import pytest
import torch
from PIL import Image

from medhash_model import ood, ood_eval
from medhash_model.metrics import pack_bits


def test_auroc_separated_reversed_and_tied():
    assert ood.auroc(np.array([0.0, 1.0]), np.array([2.0, 3.0])) == 1.0
    assert ood.auroc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 0.0
    # pairs (ood > id): 2>0, 2>1, 1>0 and one tie 1=1 counted half -> 3.5 / 4
    assert ood.auroc(np.array([0.0, 1.0]), np.array([1.0, 2.0])) == 0.875


def test_fpr95_is_the_id_share_above_the_ood_5th_percentile():
    ood_s = np.arange(100, dtype=float)           # 5th percentile: 4.95
    id_s = np.array([0.0, 1.0, 2.0, 5.0, 10.0])  # 5 and 10 are flagged
    assert ood.fpr_at_95_tpr(id_s, ood_s) == 0.4


def test_set_metrics_use_the_given_threshold_for_flagged_and_false_alarms():
    m = ood_eval.set_metrics(np.array([0.0, 0.5, 1.0, 2.0]), np.array([1.5, 3.0, 4.0, 0.2]), threshold=1.0)
    assert m["flagged_at_threshold"] == 0.75   # strictly above 1.0
    assert m["id_false_alarm"] == 0.25
    assert 0.0 <= m["auroc"] <= 1.0


def test_kth_hamming_matches_brute_force():
    rng = np.random.RandomState(0)
    index = pack_bits(rng.randn(50, 64))
    q = pack_bits(rng.randn(7, 64))
    got = ood_eval.kth_hamming(q, index, k=3)
    bits_q, bits_i = np.unpackbits(q, axis=1), np.unpackbits(index, axis=1)
    want = [np.sort((bits_q[i] != bits_i).sum(1))[2] for i in range(len(q))]
    assert got.tolist() == want


def test_knn_calibration_keeps_95_percent_of_val_in():
    rng = np.random.RandomState(1)
    knn, model = rng.randint(0, 20, 1000).astype(float), rng.randn(1000)
    cal = ood_eval.knn_calibration(knn, model, index_size=500, k=10)
    assert cal["knn"]["index_size"] == 500
    assert (knn <= cal["knn"]["threshold"]).mean() >= 0.95
    combined = np.maximum(model, (knn - cal["knn"]["mean"]) / cal["knn"]["std"])
    assert abs((combined <= cal["with_knn"]["threshold"]).mean() - 0.95) < 0.01


def test_attacks_stay_in_the_eps_ball_and_change_codes():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16))
    model = lambda x: {"u": net(x)}
    x = np.random.RandomState(2).rand(4, 3, 8, 8).astype(np.float32)
    clean = np.sign(net(torch.from_numpy(x)).detach().numpy())
    for steps, alpha in ((1, ood_eval.EPS), (ood_eval.PGD_STEPS, ood_eval.PGD_ALPHA)):
        xa = ood_eval.attack(model, x, steps, alpha)
        assert np.abs(xa - x).max() <= ood_eval.EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        flipped = (np.sign(net(torch.from_numpy(xa)).detach().numpy()) != clean).mean()
        assert flipped > 0


def test_choose_parts_picks_the_subset_that_separates_the_outliers():
    rng = np.random.RandomState(0)
    val = {p: rng.randn(200) for p in ood.PARTS}
    # the outliers stand out only on `stats`; every other part looks in-distribution
    out = {"a": {p: rng.randn(100) + (6 if p == "stats" else 0) for p in ood.PARTS}}
    norm = {p: [0.0, 1.0] for p in ood.PARTS}
    parts, table = ood.choose_parts(val, out, norm)
    assert parts == ("stats",)
    assert len(table) == 2 ** len(ood.PARTS) - 1 and max(r["mean_auroc"] for r in table) == next(r for r in table if r["parts"] == ["stats"])["mean_auroc"]


def test_head_combines_only_the_chosen_parts_by_its_rule():
    dec = ood.Decoder(8, 1, 16)
    maha = ood.Mahalanobis(torch.eye(4), torch.zeros(1, 4))
    stats = ood.Mahalanobis(torch.eye(2 * (3 + 8)), torch.zeros(1, 2 * (3 + 8)))
    qda = ood.ClassMahalanobis(torch.stack([torch.eye(4), 2 * torch.eye(4)]).to(torch.int8), torch.ones(2, 4, 1), torch.zeros(2, 4))
    stats_qda = ood.ClassMahalanobis(torch.eye(2 * (3 + 8))[None].to(torch.int8), torch.full((1, 22, 1), 3.0), torch.ones(1, 22))
    corr = np.random.RandomState(0).randn(40, 3)  # 3 channels: 3 correlations
    gram = ood.Gram.fit(corr, np.arange(40) % 2, 2, channels=3, dims=2)
    norm = {p: [0.0, 1.0] for p in ood.PARTS}
    x, shallow, deep = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 4, 4)
    feats = torch.tensor([[0.0] * 4, [9.0] * 4])
    for rule, join in (("max", lambda z: z.max(0).values), ("mean", lambda z: z.mean(0))):
        for parts in (("maha",), ("stats",), ("recon", "stats"), ("qda", "stats_qda"), ("maha", "stats_qda"), ("qda", "gram")):
            s = ood.OODHead(dec, maha, stats, qda, stats_qda, norm, parts, gram=gram, rule=rule)(x, shallow, deep, feats)
            assert set(s) == {*ood.PARTS, "combined"}
            assert torch.allclose(s["combined"], join(torch.stack([s[p] for p in parts])))
    with pytest.raises(ValueError, match="rule"):
        ood.OODHead(dec, maha, stats, qda, stats_qda, norm, ("maha",), rule="median")


def test_gram_part_scores_the_projected_channel_correlations():
    rng = np.random.RandomState(1)
    shallow = torch.from_numpy(rng.randn(60, 4, 6, 6).astype(np.float32))
    y = np.arange(60) % 3
    corr = ood.channel_correlations(shallow).flatten(1)[:, ood.Gram.triu(4)].numpy()
    assert corr.shape == (60, 6)  # 4 channels: 6 pairs
    gram = ood.Gram.fit(corr, y, 3, channels=4, dims=3)
    assert gram.basis.shape == (6, 3)
    want = gram.maha(torch.from_numpy(((corr - gram.mean.numpy()) @ gram.basis.numpy()).astype(np.float32)))
    assert torch.allclose(gram(shallow), want, atol=1e-5)
    # a map whose channels fire together (all correlations 1) is far from noise-like training maps
    together = shallow[:5, :1].repeat(1, 4, 1, 1) * torch.tensor([1.0, 2.0, 3.0, 4.0])[None, :, None, None]
    assert gram(together).min() > gram(shallow).max()


def test_choose_takes_the_mean_when_the_outliers_show_a_little_on_every_part():
    rng = np.random.RandomState(0)
    parts = ("maha", "stats", "qda")
    val = {p: rng.randn(300) for p in parts}
    norm = {p: [0.0, 1.0] for p in parts}
    spread = {"a": {p: rng.randn(200) + 0.8 for p in parts}}
    rule, chosen, table = ood.choose(val, spread, norm, parts)
    assert (rule, chosen) == ("mean", parts) and len(table) == 2 * (2 ** len(parts) - 1)
    assert {r["rule"] for r in table} == set(ood.RULES)
    one = {"a": {p: rng.randn(200) + (6 if p == "stats" else 0) for p in parts}}
    assert ood.choose(val, one, norm, parts)[:2] == ("max", ("stats",))


def test_head_holds_only_the_per_class_parts_it_is_given():
    dec = ood.Decoder(8, 1, 16)
    maha = ood.Mahalanobis(torch.eye(4), torch.zeros(1, 4))
    stats = ood.Mahalanobis(torch.eye(22), torch.zeros(1, 22))
    qda = ood.ClassMahalanobis(torch.eye(4)[None].to(torch.int8), torch.ones(1, 4, 1), torch.zeros(1, 4))
    norm = {p: [0.0, 1.0] for p in ood.PARTS}
    x, shallow, deep, feats = torch.rand(2, 1, 16, 16), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 4, 4), torch.rand(2, 4)
    head = ood.OODHead(dec, maha, stats, qda, None, norm, ("qda",))
    assert head.present == ("recon", "maha", "stats", "qda")
    s = head(x, shallow, deep, feats)
    assert "stats_qda" not in s and torch.allclose(s["combined"], s["qda"])
    with pytest.raises(ValueError, match="stats_qda"):
        ood.OODHead(dec, maha, stats, qda, None, norm, ("stats_qda",))


def _tiny_fit(monkeypatch, budget=None):
    from medhash_model import data
    from medhash_model.darf import ModelConfig, build
    from medhash_model.presets import PRESETS
    torch.manual_seed(0)
    cfg = ModelConfig(n_classes=3, bits=16, size=32, channels=1, **PRESETS["tiny"]["model"])
    model = build(cfg).eval()
    rng = np.random.RandomState(0)
    split = lambda n: data.Arrays(rng.rand(n, 1, 32, 32).astype(np.float16), np.arange(n) % 3, [str(i) for i in range(n)])  # noqa: E731
    ds = types.SimpleNamespace(splits={"train": split(60), "val": split(30)}, classes=["a", "b", "c"])
    if budget is not None:
        monkeypatch.setattr(ood, "per_class_budget", lambda *_: budget)
    return ood.fit(model, ds, log=lambda _line: None, decoder=ood.Decoder(cfg.widths[3], cfg.channels, cfg.size).eval())


def test_fit_offers_the_per_class_parts_only_within_the_model_file_budget(monkeypatch):
    head, info = _tiny_fit(monkeypatch)
    assert info["per_class"]["candidates"] and len(info["selection"]) == len(ood.RULES) * (2 ** len(ood.PARTS) - 1)
    assert head.rule == info["rule"] in ood.RULES
    # the shipped head holds the per-class parts it combines, no others
    assert [p for p in head.present if p in ood.PER_CLASS] == [p for p in info["parts"] if p in ood.PER_CLASS]
    head, info = _tiny_fit(monkeypatch, budget=info["per_class"]["bytes"] - 1)
    assert not info["per_class"]["candidates"] and len(info["selection"]) == len(ood.RULES) * 7
    assert head.present == ("recon", "maha", "stats") and set(info["thresholds"]) == {"recon", "maha", "stats", "combined"}


def test_feature_stats_are_channel_means_and_deviations():
    shallow, deep = torch.rand(3, 2, 8, 8), torch.rand(3, 5, 4, 4)
    got = ood.feature_stats(shallow, deep)
    want = torch.cat([shallow.mean((2, 3)), shallow.std((2, 3), unbiased=False),
                      deep.mean((2, 3)), deep.std((2, 3), unbiased=False)], 1)
    assert got.shape == (3, 14) and torch.allclose(got, want, atol=1e-4)


def linear_classifier(shape, n_classes=3, seed=0):
    """A model stand-in for the attacks: logits linear in the pixels."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), n_classes))
    return net, lambda x: {"logits": net(x)}


def test_validation_outliers_come_from_val_and_keep_its_shape():
    x = np.random.RandomState(0).rand(40, 3, 32, 32).astype(np.float32)
    _, model = linear_classifier((3, 32, 32))
    sets = ood.validation_outliers(model, x, n=30, seed=1)
    assert sorted(sets) == ["attack", "jigsaw", "shapes", "smooth"]
    assert all(v.shape == (30, 3, 32, 32) for v in sets.values())
    # a jigsaw image is a permutation of its source image's tiles: same pixels, other places
    src = x[np.sort(np.random.RandomState(1).permutation(40)[:30])]
    assert np.allclose(np.sort(sets["jigsaw"].reshape(30, -1), 1), np.sort(src.reshape(30, -1), 1))
    assert not np.allclose(sets["jigsaw"], src)
    # the attacked images are the same images within the threat model, on PNG levels
    assert np.abs(sets["attack"] - src).max() <= ood.EPS + 0.5 / 255 + 1e-6
    assert np.allclose(sets["attack"] * 255, np.rint(sets["attack"] * 255), atol=1e-3)


def test_class_attack_stays_in_the_eps_ball_and_pushes_away_from_the_predicted_class():
    x = np.random.RandomState(3).rand(16, 1, 8, 8).astype(np.float32)
    net, model = linear_classifier((1, 8, 8), seed=1)
    xa = ood.class_attack(model, x)
    assert np.abs(xa - x).max() <= ood.EPS + 1e-6 and xa.min() >= 0 and xa.max() <= 1
    with torch.no_grad():
        p0, pa = (torch.softmax(net(torch.from_numpy(v)), 1) for v in (x, xa))
    pred = p0.argmax(1)
    rows = torch.arange(len(x))
    assert (pa[rows, pred] < p0[rows, pred]).all()


def test_known_only_drops_the_rows_of_classes_a_model_never_saw():
    from medhash_model import data
    x = np.zeros((5, 1, 4, 4), dtype=np.float16)
    ds = data.DataSet("d", ["a", "b"], {"train": data.Arrays(x, np.array([0, -1, 1, -1, 0]), list("vwxyz"))})
    got = data.known_only(ds, "d-without-c")
    assert got.name == "d-without-c" and got.splits["train"].ids == ["v", "x", "z"]
    assert got.splits["train"].y.tolist() == [0, 1, 0]


def test_tpr_at_fpr_flags_above_the_strictest_threshold_that_keeps_the_false_alarms():
    id_s = np.arange(100, dtype=float)            # 3 % of 100: the top 3 (97, 98, 99) may be flagged
    ood_s = np.array([96.0, 97.0, 97.5, 99.5])     # threshold 96: flags 97, 97.5 and 99.5
    assert ood_eval.tpr_at_fpr(id_s, ood_s, 0.03) == 0.75
    assert ood_eval.tpr_at_fpr(id_s, ood_s, 0.0) == 0.25  # above 99 only


def test_an_ood_set_from_class_folders_is_replayed_as_pngs_of_its_source_pixels(tmp_path):
    rng = np.random.RandomState(3)
    src = tmp_path / "photos"
    pixels = {}
    for label, mode in (("cats", "L"), ("cars", "RGB")):
        (src / label).mkdir(parents=True)
        arr = rng.randint(0, 256, (9, 7) if mode == "L" else (9, 7, 3), dtype=np.uint8)
        Image.fromarray(arr, mode).save(src / label / "a.png")
        pixels[f"{label}/a.png"] = arr
    ids = sorted(pixels)
    entry = ood_eval.replay_entry(tmp_path / "sets", "far:photos", "photos", src, ids)
    assert entry["source"] == "photos" and entry["ids"] == ids
    with tarfile.open(tmp_path / "sets" / entry["file"]) as tf:
        got = [np.asarray(Image.open(io.BytesIO(tf.extractfile(f"{i:06d}.png").read()))) for i in range(len(ids))]
    for want, img in zip((pixels[i] for i in ids), got):
        assert np.array_equal(img, want)


def test_class_mahalanobis_gives_each_class_its_own_spread():
    rng = np.random.RandomState(3)
    # class 0 tight, class 1 wide, in 4 dimensions
    f = np.concatenate([rng.randn(400, 4) * 0.1, rng.randn(400, 4) * 2.0 + 50.0]).astype(np.float32)
    y = np.repeat([0, 1], 400)
    x = np.concatenate([f[:5], np.full((1, 4), -1.0, dtype=np.float32)])
    shared = ood.Mahalanobis.fit(f, y, 2)(torch.from_numpy(x)).numpy()
    per_class = ood.ClassMahalanobis.fit(f, y, 2)(torch.from_numpy(x)).numpy()
    # each class's distance is a one-class Mahalanobis of that class alone (its matrix rounded to
    # int8 per row); the score is the nearest
    alone = [ood.Mahalanobis.fit(f[y == c], np.zeros(400, dtype=np.int64), 1)(torch.from_numpy(x)).numpy() for c in (0, 1)]
    assert np.allclose(per_class, np.minimum(*alone), rtol=0.03)
    # a point 10 of class 0's deviations from its mean: the shared covariance (the mean of the two
    # spreads) finds it near, its class's own covariance far
    assert per_class[-1] > 20 * shared[-1]
    assert per_class[:5].max() < 3
