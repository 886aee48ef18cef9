"""`report`: the retrieval tables and pictures of every finished run under runs/.

Writes docs/RESULTS.md (mean and spread over seeds per data set, bit length and method, the goal
check against the best baseline with a paired Wilcoxon test over per-query AP@100, and the
command behind each row), docs/results/retrieval.json (one record per run, for scripts), and
PNGs: precision-recall curves over Hamming radius per method, and a t-SNE map of DaRF+SCH db
codes coloured by class. All figures are on `query` against `db`; nothing here chooses anything.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[2] / "docs"
OURS = "darf_sch"
BASELINES = ("cls_tanh", "hashnet", "csq", "dpsh", "bottleneck_sch")
ABLATIONS = ("abl_labels_only", "abl_no_fusion", "abl_linear_head")
NAMES = {"darf_sch": "DaRF+SCH (ours)", "cls_tanh": "classifier, tanh bottleneck", "hashnet": "HashNet",
         "csq": "CSQ", "dpsh": "DPSH", "bottleneck_sch": "CNN bottleneck + SCH",
         "abl_labels_only": "ablation: labels-only pairs", "abl_no_fusion": "ablation: no fusion (deep only)",
         "abl_linear_head": "ablation: linear head, no KAN"}
METRICS = ("map100", "map1000", "p10", "precision_r2", "recall_r2", "map100_content")


def load_runs(runs: Path) -> list[dict]:
    out = []
    for m in sorted(runs.glob("*/*/metrics.json")):
        rec = json.loads(m.read_text())
        rec["dir"] = m.parent
        ap = m.parent / "ap100_per_query.npy"
        rec["ap100_per_query"] = np.load(ap) if ap.exists() else None
        out.append(rec)
    return out


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided paired Wilcoxon signed-rank p-value (zero differences dropped)."""
    from scipy.stats import wilcoxon
    if np.allclose(a, b):
        return 1.0
    return float(wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def per_query_mean(rows: list[dict]) -> np.ndarray | None:
    """Per-query AP@100 averaged over the seeds a method has (queries are the same for every run)."""
    arrs = [r["ap100_per_query"] for r in rows if r["ap100_per_query"] is not None]
    return np.mean(arrs, axis=0) if arrs else None


def group(runs: list[dict]) -> dict:
    g: dict = {}
    for r in runs:
        g.setdefault((r["data"], r["bits"], r.get("preset", "cpu64")), {}).setdefault(r["method"], []).append(r)
    return g


def goal_check(methods: dict) -> dict | None:
    if OURS not in methods:
        return None
    base = {m: rows for m, rows in methods.items() if m in BASELINES}
    if not base:
        return None
    mean = lambda rows: float(np.mean([r["map100"] for r in rows]))  # noqa: E731
    best = max(base, key=lambda m: mean(base[m]))
    ours, theirs = mean(methods[OURS]), mean(base[best])
    reduction = 1 - (1 - ours) / (1 - theirs)
    a, b = per_query_mean(methods[OURS]), per_query_mean(base[best])
    p = wilcoxon_p(a, b) if a is not None and b is not None else None
    spread = max(float(np.std([r["map100"] for r in rows])) for rows in (methods[OURS], base[best]))
    seeds = min(len(methods[OURS]), len(base[best]))
    met = reduction >= 0.25 and p is not None and p < 0.05 and (ours - theirs) > spread and seeds >= 3
    return {"best_baseline": best, "ours": ours, "best": theirs, "error_reduction": reduction, "p_value": p,
            "seed_spread": spread, "seeds": seeds, "goal_met": met}


def ablation_line(methods: dict) -> list[str]:
    """Each ablation against DaRF+SCH on the seeds both have: difference in mean mAP@100 and the
    paired Wilcoxon p over per-query AP@100."""
    if OURS not in methods:
        return []
    parts = []
    for m in ABLATIONS:
        if m not in methods:
            continue
        common = {r["seed"] for r in methods[m]} & {r["seed"] for r in methods[OURS]}
        if not common:
            continue
        abl = [r for r in methods[m] if r["seed"] in common]
        ours = [r for r in methods[OURS] if r["seed"] in common]
        diff = float(np.mean([r["map100"] for r in abl]) - np.mean([r["map100"] for r in ours]))
        a, b = per_query_mean(abl), per_query_mean(ours)
        p = "n/a" if a is None or b is None else f"{wilcoxon_p(a, b):.3g}"
        parts.append(f"{NAMES[m]} {diff:+.4f} (p = {p}, seed(s) {','.join(map(str, sorted(common)))})")
    if not parts:
        return []
    return ["", "Ablations against DaRF+SCH (difference in mean mAP@100, paired two-sided Wilcoxon over per-query "
            "AP@100): " + "; ".join(parts) + ". A positive difference means the full model's component did not help here."]


def fmt(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return "–"
    return f"{np.mean(vals):.4f}" + (f" ± {np.std(vals):.4f}" if len(vals) > 1 else "")


def codes_of(run: Path):
    """db and query continuous codes of a run, cached beside it (encoding is the slow part)."""
    cache = run / "codes.npz"
    if cache.exists():
        z = np.load(cache)
        return z["db_u"], z["db_y"], z["q_u"], z["q_y"], list(z["classes"])
    import torch
    from .ood import load_run, run_data
    from .train import encode
    torch.set_num_threads(2)
    model, ck, _ = load_run(run)
    ds = run_data(ck, model.cfg.size, model.cfg.channels)
    db, q = ds.splits["db"], ds.splits["query"]
    db_u, q_u = encode(model, db.x)["u"], encode(model, q.x)["u"]
    np.savez(cache, db_u=db_u, db_y=db.y, q_u=q_u, q_y=q.y, classes=np.array(ds.classes))
    return db_u, db.y, q_u, q.y, list(ds.classes)


def pr_over_radius(db_u, db_y, q_u, q_y) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall of the items within Hamming radius r, r = 0..bits (no ties to break)."""
    from .metrics import hamming
    bits = q_u.shape[1]
    D = hamming(q_u, db_u)
    rel = q_y[:, None] == db_y[None, :]
    P, R = [], []
    for r in range(bits + 1):
        within = D <= r
        hits = (within & rel).sum(1)
        n = within.sum(1)
        P.append(np.mean(np.where(n > 0, hits / np.maximum(n, 1), 1.0)))
        R.append(np.mean(hits / np.maximum(rel.sum(1), 1)))
    return np.array(P), np.array(R)


def plot_file(kind: str, data: str, bits: int, preset: str, tag: str = "") -> str:
    """Name of a plot under docs/results/ (kind: pr or tsne); the cpu64 names carry no preset."""
    return f"{kind}-{data}-b{bits}{'' if preset == 'cpu64' else '-' + preset}{'-' + tag if tag else ''}.png"


def plots(runs: list[dict], written: list[str], tag: str = "", log=print) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE
    for (data, bits, preset), methods in sorted(group(runs).items()):
        if bits != 64 or OURS not in methods:
            continue
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        for m in (OURS, *BASELINES):
            seed0 = [r for r in methods.get(m, []) if r["seed"] == 0]
            if not seed0:
                continue
            log(f"report: PR curve {data} {m}")
            P, R = pr_over_radius(*codes_of(seed0[0]["dir"])[:4])
            ax.plot(R, P, label=NAMES[m], lw=2.4 if m == OURS else 1.2, zorder=3 if m == OURS else 2)
        ax.set(xlabel="recall", ylabel="precision", title=f"{data} ({preset}), {bits} bits: within Hamming radius r",
               xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=8, loc="lower left")
        path = DOCS / "results" / plot_file("pr", data, bits, preset, tag)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(str(path))
        ours0 = [r for r in methods[OURS] if r["seed"] == 0]
        if ours0:
            log(f"report: t-SNE {data}")
            db_u, db_y, _, _, classes = codes_of(ours0[0]["dir"])
            xy = TSNE(n_components=2, init="pca", random_state=0, perplexity=30).fit_transform(np.sign(db_u))
            fig, ax = plt.subplots(figsize=(5.5, 4.5))
            for c, name in enumerate(classes):
                sel = db_y == c
                ax.scatter(xy[sel, 0], xy[sel, 1], s=4, label=name)
            ax.set(title=f"{data} ({preset}): DaRF+SCH {bits}-bit db codes (t-SNE)", xticks=[], yticks=[])
            ax.legend(fontsize=7, markerscale=3)
            path = DOCS / "results" / plot_file("tsne", data, bits, preset, tag)
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            written.append(str(path))


def markdown(runs: list[dict], checks: dict, tag: str = "") -> str:
    if tag:
        devices = ", ".join(sorted({r.get("device", "cpu") for r in runs}))
        secs = sorted(r["train_seconds"] for r in runs)
        head = [f"# Retrieval results ({tag})", "",
                f"Generated by `cd models && /usr/bin/python3 -m medhash_model report --runs ../runs/{tag} --tag {tag}`",
                f"from the run folders under `runs/{tag}`, trained on: {devices} (how they were run: the command",
                "under each table, with the paths of the machine that ran it, and the header of the script that",
                "ran them, e.g. `scripts/train-gpu.sh`). The",
                "harness and presets are those of docs/RESULTS.md (every run trains on `train`, picks its checkpoint",
                "on `val`, and is measured once: `query` images searching the `db` index); another device changes",
                "its arithmetic and the order of its floating-point sums, not the method, so seeds are not",
                "bit-for-bit the CPU's. Training time per run (checkpoint selection on `val` included):",
                f"median {secs[len(secs) // 2]:.0f} s, {secs[0]:.0f}-{secs[-1]:.0f} s over {len(secs)} runs. Metrics of a code-only ranking are"]
    else:
        head = ["# Retrieval results", "",
                "Generated by `cd models && /usr/bin/python3 -m medhash_model report` from the run folders that",
                "`bash scripts/train-models.sh` produces (every run trains on `train`, picks its checkpoint on `val`,",
                "and is measured once: `query` images searching the `db` index). Metrics of a code-only ranking are"]
    lines = head + [
             "tie-aware (expected value over the orders inside each group of equal Hamming distance);",
             "`mAP@100 content` breaks ties by content similarity of the continuous codes (plain mAP, no ties left).",
             # The definitions metrics.evaluate uses; RANKING.md refers here for the AP normalisation.
             "AP@K is divided by min(R, K) (R = relevant db items; a query with none scores 0); P (r<=2) counts a",
             "query with no db item within radius 2 as 0 (the precision-recall figures count it as 1, so their",
             "r = 2 point can lie above the table's).",
             "Values are mean ± population standard deviation over the seeds listed. Presets: `cpu64` = 64x64 inputs,",
             "24 epochs x 150 steps of batch 64, the same for every method (same augmentation and schedule);",
             "`cpu128` = the same model and schedule at 128x128 inputs; `gpu128` = cpu128 with 48 epochs.",
             ("The tables hold the runs that finished before the call's deadline. The two-sided Wilcoxon test compares" if tag else
              "The tables hold the runs that have finished; `scripts/train-models.sh` holds the whole plan\n"
              "(16/32/64 bits, seeds 0-2, ablations) and resumes it. The two-sided Wilcoxon test compares"),
             "per-query AP@100 distributions, so it can be small while the means barely differ.", ""]
    for (data, bits, preset), methods in sorted(group(runs).items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        lines += [f"## {data}, {bits} bits ({preset})", "",
                  "| method | seeds | mAP@100 | mAP@1000 | P@10 | P (r<=2) | R (r<=2) | mAP@100 content |",
                  "|---|---|---|---|---|---|---|---|"]
        order = [m for m in (OURS, *BASELINES, *ABLATIONS) if m in methods]
        for m in order:
            rows = methods[m]
            seeds = ",".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
            lines.append(f"| {NAMES.get(m, m)} | {seeds} | " + " | ".join(fmt(rows, k) for k in METRICS) + " |")
        ck = checks.get((data, bits, preset))
        if ck:
            p = "n/a" if ck["p_value"] is None else f"{ck['p_value']:.3g}"
            lines += ["", f"Goal check against the best baseline ({NAMES[ck['best_baseline']]}): error reduction "
                      f"{100 * ck['error_reduction']:.1f} % (goal >= 25 %), paired two-sided Wilcoxon p = {p} over "
                      f"{'seed-averaged ' if ck['seeds'] > 1 else ''}per-query AP@100, margin "
                      f"{ck['ours'] - ck['best']:+.4f} in mean mAP@100 vs seed spread {ck['seed_spread']:.4f} ({ck['seeds']} seed(s)). "
                      f"**Goal {'met' if ck['goal_met'] else 'not met'}.**"]
        lines += ablation_line(methods)
        cmds = sorted({r["command"] for rows in methods.values() for r in rows})
        lines += ["", "Commands:", ""] + [f"    {c}" for c in cmds] + [""]
        if bits == 64 and (DOCS / "results" / plot_file("pr", data, bits, preset, tag)).exists():
            lines += [f"![precision-recall, {data} ({preset})](results/{plot_file('pr', data, bits, preset, tag)})",
                      f"![t-SNE of db codes, {data} ({preset})](results/{plot_file('tsne', data, bits, preset, tag)})", ""]
    return "\n".join(lines) + "\n"


def cmd_report(args):
    runs = load_runs(Path(args.runs))
    if not runs:
        raise SystemExit(f"no finished runs under {args.runs}")
    (DOCS / "results").mkdir(parents=True, exist_ok=True)
    checks = {key: ck for key, methods in group(runs).items() if (ck := goal_check(methods))}
    records = []
    for r in sorted(runs, key=lambda r: (r["data"], -r["bits"], r["method"], r["seed"])):
        rec = {"data": r["data"], "bits": r["bits"], "method": r["method"], "seed": r["seed"],
               "preset": r.get("preset", "cpu64"), **{k: r[k] for k in METRICS if k in r},
               "n_query": r["n_query"], "n_db": r["n_db"], "command": r["command"]}
        ck = checks.get((r["data"], r["bits"], rec["preset"]))
        if r["method"] == OURS and ck:
            rec.update({"best_baseline": ck["best_baseline"], "p_value_vs_best_baseline": ck["p_value"],
                        "error_reduction_vs_best_baseline": ck["error_reduction"], "goal_met": ck["goal_met"]})
        records.append(rec)
    suffix = f"-{args.tag}" if args.tag else ""
    (DOCS / "results" / f"retrieval{suffix}.json").write_text(json.dumps(records, indent=1) + "\n")
    written = [str(DOCS / "results" / f"retrieval{suffix}.json")]
    if not args.no_plots:
        plots(runs, written, args.tag, log=lambda s: print(s, file=sys.stderr))
    (DOCS / f"RESULTS{suffix}.md").write_text(markdown(runs, checks, args.tag))
    written.append(str(DOCS / f"RESULTS{suffix}.md"))
    for key, ck in sorted(checks.items()):
        print(json.dumps({"data": key[0], "bits": key[1], "preset": key[2], **ck}))
    print("wrote " + ", ".join(written), file=sys.stderr)


def add_parser(sub):
    p = sub.add_parser("report", help="docs/RESULTS.md, docs/results/retrieval.json and plots from runs/ (or --tag)")
    p.add_argument("--runs", default=str(Path(__file__).resolve().parents[2] / "runs"))
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--tag", default="", help="a separate set of runs (e.g. gpu): writes docs/RESULTS-TAG.md, "
                   "docs/results/retrieval-TAG.json and plots named *-TAG.png, leaving the main report alone")
    p.set_defaults(fn=cmd_report)
