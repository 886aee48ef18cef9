"""A shipped model's PyTorch modules, rebuilt from its ONNX file and card. Run folders (runs/)
are not committed, so the ONNX file is the record of a shipped encoder and OOD head; analyses
that need PyTorch (gradients, other parts on the same features) start from it.

The exporter folds each convolution's BatchNorm into the convolution (weights and bias under
generated `onnx::Conv_*` names); they come back as that convolution followed by a BatchNorm
that passes its input through plus the folded bias. Everything else keeps its parameter name.
Exports made with constant folding (head format 3 and before: brain MRI and Kather) also fold
matrix products into generated names, which this reader does not map: it rejects them."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from . import ood
from .card import card_beside, check_card, check_onnx, read_card
from .darf import ModelConfig, build
from .presets import PRESETS
from .train import METHODS


def config_from_card(card: dict) -> ModelConfig:
    """The encoder's configuration: sizes from the card, widths and depths from its preset and
    method (the card names both)."""
    t = card["training"]
    arch, _, overrides, _ = METHODS[t["method"]]
    return ModelConfig(n_classes=len(card["classes"]), bits=card["bits"], size=card["input"]["size"],
                       channels=card["input"]["channels"], arch=arch, **{**PRESETS[t["preset"]]["model"], **overrides})


def _folded_conv(node_name: str) -> tuple[str, str]:
    """The convolution and BatchNorm module names behind an exported Conv node's scope:
    `/model/backbone/stage1/c1/Conv` -> (backbone.stage1.c1, backbone.stage1.b1);
    `/model/backbone/stem/stem.0/Conv` -> (backbone.stem.0, backbone.stem.1)."""
    scope = node_name.split("/")[2:-1]
    last = scope[-1]
    if "." in last:  # an nn.Sequential member: its BatchNorm is the next index
        i = int(last.rsplit(".", 1)[1])
        base = ".".join(scope[:-1])
        return f"{base}.{i}", f"{base}.{i + 1}"
    if last.startswith("c") and last[1:].isdigit():  # BasicBlock: c1/b1, c2/b2
        base = ".".join(scope[:-1])
        return f"{base}.{last}", f"{base}.b{last[1:]}"
    raise ValueError(f"cannot place folded convolution {node_name}")


def load(onnx_path: str | Path, card: dict | None = None) -> tuple[torch.nn.Module, ood.OODHead, dict]:
    """(encoder, OOD head, card) of a shipped model; the card defaults to NAME.card.json beside it."""
    onnx_path = Path(onnx_path)
    card = check_card(card, f"the card given for {onnx_path}") if card else read_card(card_beside(onnx_path))
    check_onnx(card, onnx_path)
    proto = onnx.load(str(onnx_path))
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in proto.graph.initializer}
    generated = sorted(n for n in init if n.startswith("onnx::") and not n.startswith("onnx::Conv_"))
    if generated:
        raise ValueError(f"{onnx_path}: exported with constant folding ({generated[0]} and {len(generated) - 1} more "
                         f"generated initializers); rebuild it from its run folder instead")
    model = build(config_from_card(card))
    fresh = model.state_dict()
    state = {k: init[f"model.{k}"] for k in fresh if f"model.{k}" in init}
    modules = dict(model.named_modules())
    for node in proto.graph.node:
        if node.op_type == "Conv" and node.input[1].startswith("onnx::Conv_"):
            conv, bn = _folded_conv(node.name)
            bias = init[node.input[2]]
            state[f"{conv}.weight"] = init[node.input[1]]
            # (x - 0) / sqrt((1 - eps) + eps) * 1 + bias: the folded convolution's output plus its bias
            state.update({f"{bn}.weight": torch.ones_like(bias), f"{bn}.bias": bias,
                          f"{bn}.running_mean": torch.zeros_like(bias),
                          f"{bn}.running_var": torch.full_like(bias, 1 - modules[bn].eps)})
    for k, v in fresh.items():  # counters and the KAN grid are not exported: they follow from the config
        if k.endswith("num_batches_tracked") or k.endswith(".knots"):
            state[k] = v
    missing = sorted(set(fresh) - set(state))
    if missing:
        raise ValueError(f"{onnx_path}: no initializer for {missing[:3]} ({len(missing)} in all)")
    model.load_state_dict(state)
    model.eval()
    h = {k[len("head."):]: v for k, v in init.items() if k.startswith("head.")}
    present = [p for p in ood.PARTS if p in ("recon", "maha", "stats") or f"{p}.q" in h or f"{p}.idx" in h]
    mean, std = h["mean"].numpy(), h["std"].numpy()
    norm = {p: [float(mean[i]), float(std[i])] for i, p in enumerate(present)}
    # cards before head format 5 name no rule: their heads took the max
    head = ood.head_from_state(h, model.cfg, norm, card["ood"]["parts"], card["ood"].get("rule", "max"))
    if not np.array_equal(head.select.numpy(), h["select"].numpy()):
        raise ValueError(f"{onnx_path}: the card's ood.parts {card['ood']['parts']} are not the graph's")
    return model, head, card


def unpack(onnx_path: str | Path, run: Path, data_root: Path) -> Path:
    """A run folder (model.pt, metrics.json, ood.pt holding the shipped decoder) rebuilt from a
    shipped model, so that the run-folder commands (`ood --reuse-decoder`, `export`, `ood-eval`)
    can refit and re-export its OOD head when no training run is left. The encoder is the
    shipped one; metrics.json holds the card's retrieval metrics and training record."""
    model, head, card = load(onnx_path)
    t = card["training"]
    run.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "config": model.cfg.to_dict(), "classes": card["classes"], "data": t["data"],
                "data_path": str((data_root / t["data"]).resolve()), "preset": t["preset"], "holdout": [],
                "unpacked_from": card["model_id"]}, run / "model.pt")
    metrics = {**{k: v for k, v in card["metrics"].items() if k != "protocol"},
               **{k: t[k] for k in ("data", "method", "bits", "seed", "preset", "command")}}
    (run / "metrics.json").write_text(json.dumps(metrics, indent=1))
    torch.save({"state": head.state_dict(), "info": {"format": None, "decoder_steps": card["ood"]["decoder_steps"],
                                                     "unpacked_from": card["model_id"]}}, run / "ood.pt")
    return run


def add_parser(sub):
    p = sub.add_parser("unpack", help="a run folder rebuilt from a shipped model (encoder, card metrics, decoder), "
                                      "to refit its OOD head with `ood --run RUN --reuse-decoder` and re-export it")
    p.add_argument("--model", required=True, help="a shipped model's .onnx (its card beside it)")
    p.add_argument("--run", required=True, help="the run folder to write")
    p.add_argument("--data-root", default=None, help="default: $MEDHASH_DATA or ../shared/data")
    p.set_defaults(fn=cmd_unpack)


def cmd_unpack(args):
    from .cli import data_root
    print(json.dumps({"run": str(unpack(args.model, Path(args.run), data_root(args.data_root)))}))
