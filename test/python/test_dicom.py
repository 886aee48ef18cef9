"""DICOM on the training side: models/medhash_model/dicom.py decodes every file exactly as the
service's functions/encode/dicom.ts does (test/fixtures/dicom/decoded.json, written from the
TypeScript decoder by scripts/fixtures/make-dicom-golden.ts and checked against it by
test/encode/dicom-golden.test.ts): the same pixels, byte for byte, for each file it reads, the same
status, code and message for each file it refuses. And a class folder holding .dcm files trains
through data.py, a DICOM holding a JPEG's pixels giving that JPEG's tensor."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from medhash_model import data, dicom
from medhash_model.dicom import DicomError
from medhash_model.preprocess import preprocess_bytes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dicom"
GOLDEN = json.loads((FIXTURES / "decoded.json").read_text(encoding="utf-8"))
DATA = Path(os.environ.get("MEDHASH_DATA") or next(
    (p / "shared" / "data" for p in Path(__file__).resolve().parents if (p / "shared" / "data").is_dir()), "shared/data"))
KATHER_JPEG = "01_TUMOR/13E9B_CRC-Prim-HE-06_008.tif_Row_1_Col_451.jpg"  # behind rgb8-*.dcm (test/encode/fixtures.ts)


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


# --- a class folder holding DICOM, through data.py ------------------------------------------------

def encapsulated_frame(b: bytes) -> bytes:
    """The one fragment of an encapsulated Pixel Data (after the basic offset table): here the
    JPEG that grey8-jpeg-baseline.dcm carries, whose pixels grey8-explicit.dcm holds uncompressed."""
    at = b.index(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12
    items = []
    while True:
        group, element, length = struct.unpack_from("<HHI", b, at)
        if (group, element) == (0xFFFE, 0xE0DD):
            break
        items.append(b[at + 8:at + 8 + length])
        at += 8 + length
    assert len(items) == 2 and items[1][:3] == b"\xff\xd8\xff"
    return items[1]


def test_a_dicom_holding_a_jpegs_pixels_preprocesses_to_that_jpegs_tensor():
    jpeg = encapsulated_frame((FIXTURES / "grey8-jpeg-baseline.dcm").read_bytes())
    for name in ["grey8-explicit.dcm", "grey8-implicit.dcm"]:
        for size, channels in [(16, 1), (16, 3), (100, 1)]:
            a = preprocess_bytes((FIXTURES / name).read_bytes(), size, channels)
            assert np.array_equal(a, preprocess_bytes(jpeg, size, channels)), (name, size, channels)


def class_folder(root: Path, with_rgb: bool) -> dict[str, str]:
    """Hand/ with the grey DICOM and the JPEG it was made from (and a refused one elsewhere not);
    Tumor/ with the RGB DICOMs and their Kather JPEG when the shared data is here. -> pairs."""
    (root / "Hand" / "sub").mkdir(parents=True)
    (root / "Hand" / "scan.dcm").write_bytes((FIXTURES / "grey8-explicit.dcm").read_bytes())
    (root / "Hand" / "sub" / "SCAN2.DCM").write_bytes((FIXTURES / "ct16-window.dcm").read_bytes())
    (root / "Hand" / "scan.jpeg").write_bytes(encapsulated_frame((FIXTURES / "grey8-jpeg-baseline.dcm").read_bytes()))
    (root / "Hand" / "._scan.dcm").write_bytes(b"\0\5\26\7")  # archive debris, skipped
    pairs = {"Hand/scan.dcm": "Hand/scan.jpeg"}
    if with_rgb:
        import tarfile
        (root / "Tumor").mkdir()
        with tarfile.open(DATA / "kather_crc_2016" / "images.tar") as tf:
            (root / "Tumor" / "tile.jpg").write_bytes(tf.extractfile(KATHER_JPEG).read())
        (root / "Tumor" / "tile.dcm").write_bytes((FIXTURES / "rgb8-explicit.dcm").read_bytes())
        (root / "Tumor" / "tile-planar.dcm").write_bytes((FIXTURES / "rgb8-planar1.dcm").read_bytes())
        pairs.update({"Tumor/tile.dcm": "Tumor/tile.jpg", "Tumor/tile-planar.dcm": "Tumor/tile.jpg"})
    return pairs


def test_a_class_folder_with_dicom_loads_each_dicom_as_the_jpeg_it_was_made_from(tmp_path):
    with_rgb = (DATA / "kather_crc_2016" / "images.tar").exists()
    pairs = class_folder(tmp_path / "images", with_rgb)
    recs = data.records(tmp_path / "images")
    ids = [r.id for r in recs]
    assert "Hand/scan.dcm" in ids and "Hand/sub/SCAN2.DCM" in ids and not any("._" in i for i in ids)
    for r in recs:
        assert r.split == data.md5_split(hashlib.md5((tmp_path / "images" / r.id).read_bytes()).hexdigest())
    for channels in (1, 3):
        ds = data.load(tmp_path / "images", 24, channels, cache_dir=tmp_path / "cache")
        x = {i: a.x[k] for a in ds.splits.values() for k, i in enumerate(a.ids)}
        assert set(x) == set(ids) and x["Hand/sub/SCAN2.DCM"].shape == (channels, 24, 24)
        for dcm, jpeg in pairs.items():
            assert np.array_equal(x[dcm], x[jpeg]), (dcm, channels)


def test_a_refused_dicom_in_a_class_folder_stops_the_load_naming_the_file(tmp_path):
    class_folder(tmp_path / "images", False)
    (tmp_path / "images" / "Hand" / "compressed.dcm").write_bytes((FIXTURES / "grey8-jpeg-baseline.dcm").read_bytes())
    with pytest.raises(DicomError, match=r"^Hand/compressed\.dcm: DICOM transfer syntax 1\.2\.840\.10008\.1\.2\.4\.50 \(JPEG Baseline\)") as e:
        data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    assert (e.value.status, e.value.code) == (415, "unsupported_image_type")


def test_the_preprocessing_cache_of_a_folder_read_before_dicom_was_is_not_reused(tmp_path, monkeypatch):
    """A folder's .dcm files were fingerprinted but skipped before IMAGE_EXT took them: its cached
    arrays (without them) must not be read back now."""
    class_folder(tmp_path / "images", False)
    monkeypatch.setattr(data, "IMAGE_EXT", (".png", ".jpg", ".jpeg"))
    before = data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    assert sum(len(a.ids) for a in before.splits.values()) == 1
    monkeypatch.undo()
    after = data.load(tmp_path / "images", 8, 1, cache_dir=tmp_path / "cache")
    assert sum(len(a.ids) for a in after.splits.values()) == 3
