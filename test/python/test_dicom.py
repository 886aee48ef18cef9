"""DICOM on the training side: models/medhash_model/dicom.py decodes every file exactly as the
service's functions/encode/dicom.ts does (test/fixtures/dicom/decoded.json, written from the
TypeScript decoder by scripts/fixtures/make-dicom-golden.ts and checked against it by
test/encode/dicom-golden.test.ts): the same pixels, byte for byte, for each file it reads, the same
status, code and message for each file it refuses."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from medhash_model import dicom
from medhash_model.dicom import DicomError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dicom"
GOLDEN = json.loads((FIXTURES / "decoded.json").read_text(encoding="utf-8"))


def outcome(b: bytes) -> dict:
    """dicom.decode as the golden file writes decodeImage's answer."""
    try:
        px = dicom.decode(b)
    except DicomError as e:
        return {"refused": {"status": e.status, "code": e.code, "message": str(e)}}
    assert px.dtype == np.uint8 and px.ndim == 3
    return {"width": px.shape[1], "height": px.shape[0], "channels": px.shape[2],
            "sha256": hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()}


def expected(entry: dict, *keys: str) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


def from_parts(parts: list) -> bytes:
    return b"".join(bytes.fromhex(h) * times for h, times in parts)


def test_limits_are_the_services():
    assert GOLDEN["limits"] == {"max_elements": dicom.MAX_ELEMENTS, "max_depth": dicom.MAX_DEPTH, "max_bytes": dicom.MAX_BYTES,
                                "max_side": dicom.MAX_SIDE, "max_pixels": dicom.MAX_PIXELS}


def test_the_golden_file_names_every_fixture():
    assert [f["file"] for f in GOLDEN["fixtures"]] == sorted(p.name for p in FIXTURES.glob("*.dcm"))


@pytest.mark.parametrize("entry", GOLDEN["fixtures"], ids=lambda e: e["file"])
def test_a_fixture_decodes_or_is_refused_as_the_service_does(entry):
    assert outcome((FIXTURES / entry["file"]).read_bytes()) == expected(entry, "file")


@pytest.mark.parametrize("entry", GOLDEN["made"], ids=lambda e: e["name"])
def test_a_file_made_for_one_branch_decodes_or_is_refused_as_the_service_does(entry):
    assert outcome(from_parts(entry["parts"])) == expected(entry, "name", "parts")


def test_seeded_mutations_of_the_fixtures_decode_or_are_refused_as_the_service_does():
    originals = {p.name: p.read_bytes() for p in FIXTURES.glob("*.dcm")}
    cases = GOLDEN["mutations"]["cases"]
    assert len(cases) >= 300
    wrong = []
    for i, c in enumerate(cases):
        b = bytearray(originals[c["file"]][:c["length"]])
        for at, v in c["set"]:
            b[at] = v
        got = outcome(bytes(b))
        if got != expected(c, "file", "length", "set"):
            wrong.append((i, c["file"], got))
    assert wrong == []


def test_a_refusal_is_a_value_error_and_survives_a_worker_process():
    e = DicomError(415, "unsupported_image_type", "DICOM transfer syntax x")
    assert isinstance(e, ValueError)
    back = pickle.loads(pickle.dumps(e))
    assert (back.status, back.code, str(back)) == (415, "unsupported_image_type", "DICOM transfer syntax x")


def test_javascript_numbers_are_read_and_written_as_javascript_does():
    assert [dicom.js_number(s) for s in ["1", " 2.5 ", "\t", "0x10", "0b11", "0o7", ".5", "5.", "-1e3", "+4"]] == \
        [1, 2.5, 0, 16, 3, 7, 0.5, 5, -1000, 4]
    assert all(np.isnan(dicom.js_number(s)) for s in ["x", "1_0", "nan", "inf", "-0x1", "1e", "."])
    assert dicom.js_number("Infinity") == float("inf")
    assert [dicom.js_string(x) for x in [2.0, -0.0, 1.5, 1e21, 1e20, 1e-7, 1.25e-6, 123456789.125, -3e300]] == \
        ["2", "0", "1.5", "1e+21", "100000000000000000000", "1e-7", "0.00000125", "123456789.125", "-3e+300"]
