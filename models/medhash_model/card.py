"""The model card's format (docs/MODEL_CARD.md) on the Python side: export.py writes it, and
shipped.py and quantize.py read it through `check_card`, which refuses a card of another format
or a version this code does not know (as functions/encode/card.ts does) rather than misread a
model, and a card whose sha256 is not its model's. No torch here: quantize.py runs without it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

CARD_FORMAT, CARD_VERSION = "medhash-model-card", 1


def check_card(card: dict, where: str | Path) -> dict:
    if not isinstance(card, dict):
        raise ValueError(f"{where}: a model card is a JSON object")
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{where}: format {card.get('format')!r} is not {CARD_FORMAT!r}")
    if card.get("version") != CARD_VERSION:
        raise ValueError(f"{where}: model card version {card.get('version')!r} is not supported (this reader knows {CARD_VERSION})")
    return card


def card_beside(onnx_path: str | Path) -> Path:
    """NAME.card.json beside NAME.onnx, where export writes it."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name[:-len(".onnx")] + ".card.json")


def read_card(path: str | Path) -> dict:
    return check_card(json.loads(Path(path).read_text()), path)


def check_onnx(card: dict, onnx_path: Path) -> None:
    sha = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    if sha != card.get("sha256"):
        raise ValueError(f"{onnx_path}: sha256 {sha} does not match the card's {card.get('sha256')}")
