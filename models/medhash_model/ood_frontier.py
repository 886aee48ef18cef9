"""What the OOD goals ask of a shipped model's parts (`ood-frontier`): every subset of its OOD
parts, plus three candidates the head does not hold: a per-class Mahalanobis distance of the
image's thumbnail (the kind of fingerprint SCH weighs its pairs with), feature squeezing
(Xu et al. 2018: how far the code moves when the image is smoothed, which costs a second pass
of the encoder), and the KNN baseline's own score, to see whether joining it to the others
gets ahead of it. (The Gram part began here as a candidate, and is a part of the head since head
format 5.) Each subset is scored by the max of its `val`-z-scores (the rule of heads before
format 5) and by three other rules (`RULES`), on `val` against the synthetic validation outliers
and on the model's committed OOD sets, beside MSP, energy and KNN on the same features.

It answers a question the goal check alone cannot: whether the goals miss because validation
chose badly, or because no combination of these parts, joined by any of these rules, meets
them all. It is an analysis of the evaluation sets, so nothing here is shipped or chosen from it."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data as data_mod
from . import losses, ood, ood_eval, shipped
from .train import encode

FORMAT, VERSION = "medhash-ood-frontier", 3
# the extra candidates' variants (thumbnail side, smoothing box side, neighbour rank k: the KNN
# baseline's or a wider one); validation picks one of each
KNN_BASELINE_K = 10
EXTRA = {"thumb": (8, 16), "squeeze": (2, 3), "knn": (KNN_BASELINE_K, 50)}
BASELINES = ("msp", "energy", "knn_features")
GOAL_FAR_AUROC, GOAL_FAR_FLAGGED, GOAL_NEAR_AUROC = 0.99, 0.95, 0.90
# ways to join the parts' val-z-scores (parts x images -> images): the head's two (max, mean) and
# two more that let a part below its own alarm level still count, to see whether the rule rather
# than the parts is the limit
RULES = {**ood.RULES, "logsumexp": lambda z: np.logaddexp.reduce(z, axis=0), "sum_positive": lambda z: np.maximum(z, 0).sum(0)}


def thumbnails(x: np.ndarray, side: int) -> np.ndarray:
    """SCH's fingerprints (side x side thumbnails, flattened) of a batch of images."""
    return losses.fingerprints(torch.from_numpy(x.astype(np.float32)), side).numpy()


def smooth(x: np.ndarray, side: int) -> np.ndarray:
    """side x side box filter, edges replicated, same size out."""
    t = F.pad(torch.from_numpy(x.astype(np.float32)), (side // 2, (side - 1) // 2) * 2, mode="replicate")
    return F.avg_pool2d(t, side, 1).numpy()


def squeeze_score(u: np.ndarray, u_smooth: np.ndarray) -> np.ndarray:
    """1 - Pearson correlation of the continuous code before and after smoothing (the SCH pair
    distance's correlation): adversarial perturbations are brittle, the anatomy is not."""
    a, b = u - u.mean(1, keepdims=True), u_smooth - u_smooth.mean(1, keepdims=True)
    return 1 - (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1) + 1e-12)


def subset_table(scores: dict[str, dict[str, np.ndarray]], parts: list[str], outliers: list[str],
                 eval_sets: list[str], rule: str = "max") -> tuple[list[str], list[dict]]:
    """Validation's choice among `parts` (`ood.choose_parts`, as the OOD stage makes it) and, for
    every non-empty subset, its validation AUROCs and, per evaluation set, the AUROC of its
    z-scores joined by `rule` and the share flagged at 3 % `query` false alarms."""
    norm = {p: [float(scores["val"][p].mean()), float(scores["val"][p].std() + 1e-12)] for p in parts}
    chosen, table = ood.choose_parts(scores["val"], {o: scores[o] for o in outliers}, norm, tuple(parts), RULES[rule])
    rows = []
    for r in table:
        def joined(s, sub=r["parts"]):
            return RULES[rule](np.stack([(s[p] - norm[p][0]) / norm[p][1] for p in sub]))
        q = joined(scores["query"])
        sets = {e: {"auroc": ood.auroc(q, joined(scores[e])), "tpr_at_fpr3": ood_eval.tpr_at_fpr(q, joined(scores[e]), 0.03)}
                for e in eval_sets}
        rows.append({"parts": r["parts"], "val": r["auroc"], "val_mean": r["mean_auroc"], "sets": sets})
    return list(chosen), rows


def goals(row: dict, baselines: dict[str, float]) -> dict:
    """Issue 5's goals for one subset's row; `baselines[set]` is the best baseline AUROC there."""
    far = [s for s in row["sets"] if s.startswith("far:")]
    near = [s for s in row["sets"] if s.startswith("near:")]
    behind = sorted(s for s in row["sets"] if row["sets"][s]["auroc"] <= baselines[s])
    return {"far_auroc": all(row["sets"][s]["auroc"] >= GOAL_FAR_AUROC for s in far),
            "far_flagged": all(row["sets"][s]["tpr_at_fpr3"] >= GOAL_FAR_FLAGGED for s in far),
            "near_auroc": all(row["sets"][s]["auroc"] >= GOAL_NEAR_AUROC for s in near),
            "behind_a_baseline": behind}


def missed(row: dict) -> int:
    """How many of issue 5's goals a subset's row misses (each set behind a baseline counts once)."""
    g = row["goals"]
    return sum(not g[k] for k in ("far_auroc", "far_flagged", "near_auroc")) + len(g["behind_a_baseline"])


def chosen_row(rows: list[dict], allowed) -> dict:
    """Validation's choice among the subsets of `allowed`: rows keep choose_parts' order, so the
    first best row is the one it takes."""
    return max((r for r in rows if set(r["parts"]) <= set(allowed)), key=lambda r: r["val_mean"])


def choices(rows: list[dict], head_parts) -> dict:
    """Validation's choice among the head's parts ("head"), among those and each extra candidate
    ("head+thumb", ...) and among all of them ("all")."""
    return {"head": chosen_row(rows, head_parts), **{f"head+{p}": chosen_row(rows, {*head_parts, p}) for p in EXTRA},
            "all": chosen_row(rows, {p for r in rows for p in r["parts"]})}


def rule_summary(rows: list[dict], head_parts) -> dict:
    """One rule's rows, short: how many meet every goal, validation's choices, the 3 nearest misses
    and every subset ahead of the baselines on every set."""
    return {"every_goal": sum(missed(r) == 0 for r in rows), "subsets": len(rows), "chosen": choices(rows, head_parts),
            "fewest_missed": sorted(rows, key=missed)[:3],  # stable: validation order within a count
            "ahead_of_baselines": [r for r in rows if not r["goals"]["behind_a_baseline"]]}


def analyse(onnx_path: Path, oodsets: Path, data_root: Path, log=print) -> dict:
    t0 = time.time()
    model, head, card = shipped.load(onnx_path)
    cfg = model.cfg
    ds = data_mod.known_only(data_mod.load(data_root / card["training"]["data"], cfg.size, cfg.channels, classes=card["classes"]))
    tr = ds.splits["train"]
    manifest, eval_x = ood_eval.read_oodset(oodsets / card["name"], data_root)
    if (manifest["size"], manifest["channels"]) != (cfg.size, cfg.channels):
        raise SystemExit(f"{oodsets / card['name']}: sets at {manifest['size']}px x {manifest['channels']}, the model reads "
                         f"{cfg.size}px x {cfg.channels}")
    outliers = ood.validation_outliers(model, ds.splits["val"].x)
    images = {"val": ds.splits["val"].x, "query": ds.splits["query"].x, **outliers, **eval_x}
    bank = ood_eval.knn_bank(model, tr.x)
    thumbs = {t: ood.ClassMahalanobis.fit(thumbnails(tr.x, t), tr.y, len(ds.classes)) for t in EXTRA["thumb"]}
    scores = {}
    for name, x in images.items():
        s = ood.scores_np(model, head, x)
        scores[name] = {k: s[k] for k in (*head.present, "combined", "msp", "energy")}
        for k in EXTRA["knn"]:
            scores[name][f"knn{k}"] = ood.knn_score(s["features"], bank, k)
        scores[name]["knn_features"] = scores[name][f"knn{KNN_BASELINE_K}"]
        with torch.no_grad():
            for t, m in thumbs.items():
                scores[name][f"thumb{t}"] = m(torch.from_numpy(thumbnails(x, t))).numpy()
        for k in EXTRA["squeeze"]:
            scores[name][f"squeeze{k}"] = squeeze_score(s["u"], encode(model, smooth(x, k))["u"])
        log(json.dumps({"stage": "scores", "set": name, "n": len(x), "seconds": round(time.time() - t0, 1)}))
    names = list(outliers)
    extra = {}
    for part, variants in EXTRA.items():
        val = {v: float(np.mean([ood.auroc(scores["val"][f"{part}{v}"], scores[o][f"{part}{v}"]) for o in names]))
               for v in variants}
        pick = max(variants, key=lambda v: val[v])  # max keeps the first of equals
        extra[part] = {"variant": pick, "val_mean_auroc": val}
        for s in scores.values():
            s[part] = s[f"{part}{pick}"]
    sets = list(eval_x)
    baselines = {e: {b: ood.auroc(scores["query"][b], scores[e][b]) for b in BASELINES} for e in sets}
    best_baseline = {e: max(v.values()) for e, v in baselines.items()}
    tables = {}
    for rule in RULES:
        tables[rule] = subset_table(scores, [*head.present, *EXTRA], names, sets, rule)[1]
        for row in tables[rule]:
            row["goals"] = goals(row, best_baseline)
    rows = tables["max"]
    return {"format": FORMAT, "version": VERSION, "model_id": card["model_id"], "shipped_parts": card["ood"]["parts"],
            "shipped_rule": card["ood"].get("rule", "max"),
            "extra": extra, "chosen": {k: r["parts"] for k, r in choices(rows, head.present).items()},
            "baselines": baselines, "subsets": rows, "rules": {r: rule_summary(t, head.present) for r, t in tables.items()},
            "seconds": round(time.time() - t0, 1)}


def markdown(doc: dict) -> str:
    """The baselines, then the subsets that validation ranks highest, those that meet both
    far-OOD goals, those behind a baseline on the fewest sets, and what the other rules of
    joining the z-scores give."""
    sets = list(doc["subsets"][0]["sets"])
    short = {s: s.split(":", 1)[1].split(" ")[0] for s in sets}
    head = ("| parts | val mean | " + " | ".join(f"{short[s]} AUROC" for s in sets)
            + " | far at 3 % | goals missed |\n|---|---|" + "---|" * (len(sets) + 2))

    def line(r, pre="", bold=True):
        far = [s for s in sets if s.startswith("far:")]
        misses = [k for k in ("far_auroc", "far_flagged", "near_auroc") if not r["goals"][k]]
        misses += [f"behind on {', '.join(short[s] for s in r['goals']['behind_a_baseline'])}"] if r["goals"]["behind_a_baseline"] else []
        mark = "**" if bold and r["parts"] in doc["chosen"].values() else ""
        return (f"| {pre}{mark}{' + '.join(r['parts'])}{mark} | {r['val_mean']:.4f} | "
                + " | ".join(f"{r['sets'][s]['auroc']:.3f}" for s in sets)
                + " | " + ", ".join(f"{100 * r['sets'][s]['tpr_at_fpr3']:.1f} %" for s in far)
                + " | " + ("; ".join(misses) or "none") + " |")

    def label(key, after_head=True):  # "head", "head+thumb", ..., "all"
        extra = key.split("+", 1)[-1]
        return {"head": "the head's parts", "all": "all candidates"}.get(key, f"those and {extra}" if after_head
                                                                         else f"the head's parts and {extra}")

    by_val = sorted(doc["subsets"], key=lambda r: -r["val_mean"])
    base = "| baseline | " + " | ".join(short[s] for s in sets) + " |\n|---|" + "---|" * len(sets) + "\n" + "\n".join(
        f"| {b} | " + " | ".join(f"{doc['baselines'][s][b]:.3f}" for s in sets) + " |" for b in BASELINES)
    far_ok = [r for r in by_val if r["goals"]["far_auroc"] and r["goals"]["far_flagged"]]
    fewest = sorted(by_val, key=lambda r: len(r["goals"]["behind_a_baseline"]))  # stable: validation order within a count
    every = [r for r in by_val if missed(r) == 0]
    rules_head = ("| rule | meeting every goal | row | " + head[len("| "):].replace("\n|---|", "\n|---|---|---|---|", 1))

    def rule_rows(d):  # validation's choices, each candidate set's only where it differs from those before
        seen, out = [], []
        for key, r in d["chosen"].items():
            if r["parts"] not in seen or key == "all":
                seen.append(r["parts"])
                out.append((f"validation, {label(key, False)}", r))
        return out + [("fewest goals missed", d["fewest_missed"][0])]

    rule_lines = [line(r, f"{rule} | {d['every_goal']} of {d['subsets']} | {which} | ", bold=False)
                  for rule, d in doc["rules"].items() for which, r in rule_rows(d)]
    across = [max(((rule, d["chosen"][key]) for rule, d in doc["rules"].items()), key=lambda t: t[1]["val_mean"])
              for key in doc["chosen"]]  # max keeps the first rule of equals: the max
    across_text = "; ".join(f"among {label(key, False)}: {rule} of {' + '.join(r['parts'])} ({r['val_mean']:.4f})"
                            for key, (rule, r) in zip(doc["chosen"], across))
    ahead = sorted(((rule, r) for rule, d in doc["rules"].items() for r in d["ahead_of_baselines"]), key=lambda t: -t[1]["val_mean"])
    ahead_head = "| rule | " + head[len("| "):].replace("\n|---|", "\n|---|---|", 1)
    out = [f"Model `{doc['model_id']}`; " + "; ".join(
               f"{p} variant {e['variant']} (validation: " + ", ".join(f"{v}: {a:.4f}" for v, a in e["val_mean_auroc"].items()) + ")"
               for p, e in doc["extra"].items()) + ".",
           f"Shipped: the {doc.get('shipped_rule', 'max')} of {' + '.join(doc['shipped_parts'])}. Validation's choice by the max (in bold below) "
           + "; ".join(f"among {label(k)}: {' + '.join(v)}" for k, v in doc["chosen"].items())
           + f". Subsets meeting every goal: {len(every)} of {len(by_val)}.",
           "", base, "", "Highest validation AUROC, joined by the max (10 of the subsets):", "", head, *(line(r) for r in by_val[:10]),
           "", f"Meeting both far-OOD goals ({len(far_ok)}; the 5 best by validation):", "", head, *(line(r) for r in far_ok[:5]),
           "", "Behind a baseline on the fewest sets (5; ties by validation):", "", head, *(line(r) for r in fewest[:5]),
           "", "Other rules for joining the parts' z-scores (validation chooses within each rule; a choice among more "
           "candidates is shown where it differs from those above it):",
           "", rules_head, *rule_lines,
           "", f"Highest validation AUROC over rules and subsets, {across_text}.",
           "", f"Ahead of every baseline on every set, any rule ({len(ahead)}; the 10 best by validation):", "", ahead_head,
           *(line(r, f"{rule} | ", bold=False) for rule, r in ahead[:10])]
    return "\n".join(out)


def add_parser(sub):
    p = sub.add_parser("ood-frontier", help="every subset of a shipped model's OOD parts (and thumbnail, squeezing and KNN parts) "
                                            "against the OOD goals: validation choice vs what the evaluation sets allow")
    p.add_argument("--model", default=None, help="a shipped model's .onnx (its card beside it)")
    p.add_argument("--oodsets", default=None, help="default: the oodsets folder beside the model")
    p.add_argument("--data-root", default=None, help="default: $MEDHASH_DATA or ../shared/data")
    p.add_argument("--json", default=None, help="write the result here (e.g. ../docs/results/ood-frontier-mednist.json)")
    p.add_argument("--table", action="store_true", help="print the --json file's tables (docs/OOD.md) without computing")
    p.set_defaults(fn=cmd_ood_frontier)


def cmd_ood_frontier(args):
    from .cli import data_root
    if args.table:
        doc = json.loads(Path(args.json).read_text())
        if (doc.get("format"), doc.get("version")) != (FORMAT, VERSION):
            raise SystemExit(f"{args.json}: not a {FORMAT} v{VERSION} file")
        print(markdown(doc))
        return
    if not args.model:
        raise SystemExit("ood-frontier: name a --model (or --table --json FILE)")
    torch.set_num_threads(int(os.environ.get("MEDHASH_THREADS", "2")))
    model = Path(args.model)
    doc = analyse(model, Path(args.oodsets) if args.oodsets else model.parent / "oodsets", data_root(args.data_root),
                  log=lambda s: print(s, file=sys.stderr, flush=True))
    doc["command"] = "cd models && python3 -m medhash_model " + " ".join(sys.argv[1:])
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    print(markdown(doc))
