"""DICOM on the training side: models/medhash_model/dicom.py decodes every file exactly as the
service's functions/encode/dicom.ts does (test/fixtures/dicom/decoded.json, written from the
TypeScript decoder by scripts/fixtures/make-dicom-golden.ts and checked against it by
test/encode/dicom-golden.test.ts): the same pixels, byte for byte, for each file it reads (a JPEG
Baseline one's, decoded by PIL where the service uses mozjpeg, to within one grey level), the same
status, code and message for each file it refuses. And a class folder holding .dcm files trains
through data.py, a DICOM holding a JPEG's pixels giving that JPEG's tensor."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import struct
import tracemalloc
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
#: How far a JPEG's pixels may differ between PIL and the service's mozjpeg: one grey level, as
#: test/encode/parity.test.ts allows (1/255 after the division by 255).
JPEG_TOLERANCE = 1
#: A JPEG 2000 frame the codec refuses is refused with OpenJPEG's words on the service and Pillow's
#: here: such a refusal is held to the words before them, which name the syntax and the failure.
CODEC_WORDS = re.compile(r"DICOM JPEG 2000( Lossless)? frame could not be decoded: ")


def outcome(b: bytes, like: dict | None = None) -> dict:
    """dicom.decode as the golden file writes decodeImage's answer, of the entry's frame if it
    names one (an entry's "frame" is kept in the answer, as it is in the entry). `like`, an entry
    that keeps its pixels (a JPEG Baseline or lossy JPEG 2000 file): the sha256 and pixels are the entry's when this
    decode's pixels are within JPEG_TOLERANCE of them, so that the comparison is the whole answer;
    and a JPEG 2000 codec's refusal is the entry's when the words before the codec's agree (CODEC_WORDS)."""
    frame = None if like is None else like.get("frame")
    framed = {} if frame is None else {"frame": frame}
    try:
        px = dicom.decode(b, frame)
    except DicomError as e:
        message = str(e)
        theirs = (like or {}).get("refused", {}).get("message", "")
        codec = CODEC_WORDS.match(message)
        if codec and theirs.startswith(codec.group(0)):
            message = theirs
        return {**framed, "refused": {"status": e.status, "code": e.code, "message": message}}
    assert px.dtype == np.uint8 and px.ndim == 3
    out = {**framed, "width": px.shape[1], "height": px.shape[0], "channels": px.shape[2],
           "sha256": hashlib.sha256(np.ascontiguousarray(px).tobytes()).hexdigest()}
    if like is not None and "pixels" in like:
        theirs = np.frombuffer(base64.b64decode(like["pixels"]), dtype=np.uint8)
        mine = np.ascontiguousarray(px).reshape(-1)
        if theirs.shape == mine.shape and int(np.abs(mine.astype(np.int16) - theirs).max()) <= JPEG_TOLERANCE:
            out.update(sha256=like["sha256"], pixels=like["pixels"])
        else:
            out["pixels"] = base64.b64encode(mine.tobytes()).decode()
    return out


def expected(entry: dict, *keys: str) -> dict:
    return {k: v for k, v in entry.items() if k not in keys}


def from_parts(parts: list) -> bytes:
    return b"".join(bytes.fromhex(h) * times for h, times in parts)


def test_the_golden_format_is_the_one_read_here():
    # version 2 added "frame" to entries: a reader of version 1 would decode them without it
    assert GOLDEN["version"] == 2


def test_limits_are_the_services():
    assert GOLDEN["limits"] == {"max_elements": dicom.MAX_ELEMENTS, "max_depth": dicom.MAX_DEPTH, "max_bytes": dicom.MAX_BYTES,
                                "max_side": dicom.MAX_SIDE, "max_pixels": dicom.MAX_PIXELS, "max_inflated_bytes": dicom.MAX_INFLATED_BYTES}


def test_the_golden_file_names_every_fixture():
    assert [f["file"] for f in GOLDEN["fixtures"] if "frame" not in f] == sorted(p.name for p in FIXTURES.glob("*.dcm"))


@pytest.mark.parametrize("entry", GOLDEN["fixtures"], ids=lambda e: e["file"])
def test_a_fixture_decodes_or_is_refused_as_the_service_does(entry):
    assert outcome((FIXTURES / entry["file"]).read_bytes(), entry) == expected(entry, "file")


@pytest.mark.parametrize("entry", GOLDEN["made"], ids=lambda e: e["name"])
def test_a_file_made_for_one_branch_decodes_or_is_refused_as_the_service_does(entry):
    assert outcome(from_parts(entry["parts"]), entry) == expected(entry, "name", "parts")


def test_the_golden_file_holds_the_compressed_cases():
    """RLE, JPEG Lossless, JPEG-LS and JPEG 2000 lossless (16-bit grey, 8-bit RGB, 8-bit grey) equal to the uncompressed
    decode of the same pixels (Pillow's JPEG 2000 samples, offset and shifted, taken back exactly), JPEG Baseline and lossy JPEG 2000 (grey and YBR_FULL_422 colour) with its pixels kept for the tolerance."""
    sha = {f["file"]: f.get("sha256") for f in GOLDEN["fixtures"] if "frame" not in f}
    for rle, plain in [("ct16-window-rle.dcm", "ct16-window.dcm"), ("rgb8-rle.dcm", "rgb8-explicit.dcm"), ("grey8-rle.dcm", "grey8-explicit.dcm"),
                       ("grey8-jpeg-lossless-sv1.dcm", "grey8-explicit.dcm"), ("ct16-window-jpeg-lossless-sv7-restart.dcm", "ct16-window.dcm"),
                       ("ct12-garbage-nowindow-jpeg-lossless-sv1.dcm", "ct12-garbage-nowindow.dcm"),
                       ("rgb8-corner-jpeg-lossless-sv1.dcm", "rgb8-corner-explicit.dcm"),
                       ("grey8-jpeg-ls.dcm", "grey8-explicit.dcm"), ("ct16-window-jpeg-ls.dcm", "ct16-window.dcm"),
                       ("ct12-garbage-nowindow-jpeg-ls.dcm", "ct12-garbage-nowindow.dcm"),
                       ("rgb8-corner-jpeg-ls.dcm", "rgb8-corner-explicit.dcm"), ("rgb8-corner-jpeg-ls-planes.dcm", "rgb8-corner-explicit.dcm"),
                       ("grey8-jpeg2000-lossless.dcm", "grey8-explicit.dcm"), ("ct16-window-jpeg2000-lossless.dcm", "ct16-window.dcm"),
                       ("ct12-garbage-nowindow-jpeg2000-lossless.dcm", "ct12-garbage-nowindow.dcm"),
                       ("rgb8-corner-jpeg2000-lossless.dcm", "rgb8-corner-explicit.dcm"),
                       ("rgb8-corner-jpeg2000-lossless-rct.dcm", "rgb8-corner-explicit.dcm"),
                       ("grey8-deflated.dcm", "grey8-explicit.dcm")]:
        assert sha[rle] is not None and sha[rle] == sha[plain], rle
    lossy = sorted({f["file"] for f in GOLDEN["fixtures"] if "pixels" in f})
    assert lossy == ["grey8-frames3-jpeg-baseline-fs1-nobot.dcm", "grey8-jpeg-baseline.dcm", "grey8-jpeg-extended.dcm",
                     "grey8-jpeg2000-lossy.dcm", "rgb8-corner-jpeg-extended.dcm", "rgb8-corner-jpeg2000-lossy-ict.dcm", "rgb8-jpeg-baseline.dcm"]


@pytest.mark.parametrize("frame", [-1, 1.5, True, 2 ** 53, 2 ** 64])
def test_a_malformed_frame_is_a_400_before_the_bytes_are_read(frame):
    """As decodeImage's checkFrame (test/encode/dicom.test.ts): a frame past JavaScript's safe
    integers is malformed there, not out of range, so here too."""
    with pytest.raises(DicomError) as e:
        dicom.decode(b"", frame)
    assert (e.value.status, e.value.code) == (400, "invalid_field")
    assert str(e.value) == f"frame must be a non-negative integer, got {frame}"


def test_the_largest_safe_frame_is_out_of_range_not_malformed():
    with pytest.raises(DicomError) as e:
        dicom.decode((FIXTURES / "grey8-frames3-rle.dcm").read_bytes(), 2 ** 53 - 1)
    assert (e.value.status, e.value.code) == (422, "frame_out_of_range")


def test_each_frame_of_a_multi_frame_fixture_is_the_single_frame_decode_of_its_pixels():
    """The multi-frame fixtures (uncompressed, RLE and JPEG Lossless, with and without a Basic Offset
    Table, one or several fragments a frame): frame 0 is the single-frame file of the same pixels,
    every frame of a compressed file is that frame of the uncompressed one, and one past the last
    is out of range."""
    by = {(f["file"], f.get("frame")): f for f in GOLDEN["fixtures"]}
    for family, single in [("grey8-frames3", "grey8-explicit.dcm"), ("ct16-window-frames3", "ct16-window.dcm")]:
        files = sorted(f for f, k in by if f.startswith(family) and k is None and "baseline" not in f)
        assert len(files) >= 3
        assert by[(f"{family}.dcm", 0)]["sha256"] == by[(single, None)]["sha256"]
        for f in files:
            assert by[(f, None)]["refused"]["status"] == 415 and "`frame`" in by[(f, None)]["refused"]["message"]
            for k in range(3):
                assert by[(f, k)]["sha256"] == by[(f"{family}.dcm", k)]["sha256"], (f, k)
            assert by[(f, 3)]["refused"]["code"] == "frame_out_of_range"
        assert len({by[(f"{family}.dcm", k)]["sha256"] for k in range(3)}) == 3


def test_each_frame_of_an_enhanced_fixture_decodes_as_its_classic_twin():
    """Enhanced CT-style fixtures: frame k's rescale and window come from its Per-frame
    Functional Groups item, else the shared item, else the top level, so it decodes to the pixels
    of the single-frame file holding them at the top level; a Per-frame sequence of 2 items for 3
    frames is refused."""
    for family in ("ct16-enhanced-frames3", "ct16-enhanced-shared-frames3"):
        enhanced = (FIXTURES / f"{family}.dcm").read_bytes()
        for k in range(3):
            twin = dicom.decode((FIXTURES / f"{family}-twin{k}.dcm").read_bytes())
            assert np.array_equal(dicom.decode(enhanced, k), twin), (family, k)
    for frame in (0, 2, None):
        with pytest.raises(DicomError) as e:
            dicom.decode((FIXTURES / "ct16-enhanced-frames3-items2.dcm").read_bytes(), frame)
        assert (e.value.status, str(e.value)) == (422, "DICOM's Per-frame Functional Groups Sequence (5200,9230) has 2 items; "
                                                       "Number of Frames (0028,0008) is 3 (one item a frame)")


def test_a_voi_lut_sequence_maps_each_value_to_the_top_8_bits_of_its_entry_as_dcmtk():
    """lut-voi16: stored 4i through round(65535 (i / 4095)^0.6), 16 bits; lut-voi-signed-ct: the CT
    ramp (stored c * 64 + r, rescale -1024) through a 12-bit LUT from -1024 (a signed first value
    mapped: the rescale's output can be negative), entry k = 4095 - k (scripts/fixtures/make-dicom.ts)."""
    curve = [round(65535 * (i / 4095) ** 0.6) for i in range(4096)]
    got = dicom.decode((FIXTURES / "lut-voi16.dcm").read_bytes()).reshape(-1)
    assert got.tolist() == [curve[4 * i] >> 8 for i in range(1024)]
    ct = dicom.decode((FIXTURES / "lut-voi-signed-ct.dcm").read_bytes())[:, :, 0]
    assert all(ct[r, c] == (4095 - (c * 64 + r)) >> 4 for r in range(64) for c in range(64))


def test_lut_refusals_are_422s_naming_the_attribute():
    refused = {m["name"]: m["refused"] for m in GOLDEN["made"] if m["name"].startswith("lut-") and "refused" in m}
    assert len(refused) >= 15
    for name, r in refused.items():
        assert (r["status"], r["code"]) == (422, "corrupt_image"), name
        assert re.search(r"(LUT Sequence \(0028,30[01]0\)|LUT Data \(0028,3006\)|LUT Descriptor \(0028,3002\))", r["message"]), name


def test_a_jpeg_baseline_decode_outside_the_tolerance_fails_the_comparison():
    entry = next(f for f in GOLDEN["fixtures"] if f["file"] == "grey8-jpeg-baseline.dcm")
    px = np.frombuffer(base64.b64decode(entry["pixels"]), dtype=np.uint8).copy()
    px[0] = px[0] + 2 if px[0] < 128 else px[0] - 2
    moved = {**entry, "pixels": base64.b64encode(px.tobytes()).decode()}
    assert outcome((FIXTURES / entry["file"]).read_bytes(), moved) != expected(moved, "file")
    px[0] = px[0] - 1 if px[0] < 128 else px[0] + 1  # now one level off: within the tolerance
    near = {**entry, "pixels": base64.b64encode(px.tobytes()).decode()}
    assert outcome((FIXTURES / entry["file"]).read_bytes(), near) == expected(near, "file")


def test_a_jpeg2000_codec_refusal_is_held_to_the_words_before_the_codecs():
    entry = next(m for m in GOLDEN["made"] if m["name"] == "jpeg2000-cod-33-levels")
    assert CODEC_WORDS.match(entry["refused"]["message"])
    assert outcome(from_parts(entry["parts"]), entry) == expected(entry, "name", "parts")
    # another syntax's words, or a refusal before the codec, are not taken for the entry's
    other = {**entry, "refused": {**entry["refused"], "message": "DICOM JPEG 2000 frame could not be decoded: Stream too short"}}
    assert outcome(from_parts(entry["parts"]), other) != expected(other, "name", "parts")


@pytest.mark.parametrize("name", ["jpeg2000-cut-after-first-sot", "jpeg2000-eoc-replaced-by-sot", "jpeg2000-tile-part-after-the-last",
                                  "jpeg2000-tile-part-repeated", "jpeg2000-tile-part-of-tile-1"])
def test_a_jpeg2000_form_the_two_openjpegs_read_differently_is_refused_before_pillow_with_the_services_words(name):
    """The forms Pillow's OpenJPEG and the service's read differently: a codestream cut short (the
    first Pillow decoded, the second the service did), and a tile-part after the one that completes
    its tile's TNsot (the service's decoded the image regardless, Pillow's refused it). The
    walk to the EOC refuses each, word for word, not up to the codec's words."""
    entry = next(m for m in GOLDEN["made"] if m["name"] == name)
    assert not CODEC_WORDS.match(entry["refused"]["message"])
    with pytest.raises(DicomError) as e:
        dicom.decode(from_parts(entry["parts"]))
    assert (e.value.status, e.value.code, str(e.value)) == (entry["refused"]["status"], entry["refused"]["code"], entry["refused"]["message"])


def test_signed_jpeg2000_samples_of_8_bits_keep_their_sign_as_on_the_service():
    """test/encode/dicom.test.ts's twin: grey8's reversible codestream with Ssiz's sign bit set holds
    exactly its samples less 128, and decodes as the uncompressed file of those samples does."""
    j2k = bytearray((FIXTURES / "grey8-jpeg2000-lossless.dcm").read_bytes())
    plain = bytearray((FIXTURES / "grey8-explicit.dcm").read_bytes())
    representation = bytes.fromhex("28000301" + "5553" + "0200")  # (0028,0103) US, 2 bytes
    for b in (j2k, plain):
        b[b.index(representation) + 8] = 1
    j2k[j2k.index(b"\xff\x4f\xff\x51") + 42] |= 0x80
    at = plain.index(b"\xe0\x7f\x10\x00OB") + 12
    plain[at:] = bytes((v - 128) & 0xFF for v in plain[at:])
    assert np.array_equal(dicom.decode(bytes(j2k)), dicom.decode(bytes(plain)))


def test_a_jpeg2000_tile_side_of_2_to_the_31_is_refused_as_on_the_service():
    """test/encode/dicom.test.ts's twin: the service's OpenJPEG reads such a tile, Pillow's does not."""
    b = bytearray((FIXTURES / "ct16-window-jpeg2000-lossless.dcm").read_bytes())
    at = b.index(b"\xff\x4f\xff\x51")
    b[at + 24:at + 28] = (0x80000000).to_bytes(4, "big")
    with pytest.raises(DicomError, match=r"^DICOM JPEG 2000 Lossless frame declares tiles of 2147483648x64; a side may be at most 2147483647$"):
        dicom.decode(bytes(b))
    b[at + 24:at + 28] = (0x7FFFFFFF).to_bytes(4, "big")
    assert dicom.decode(bytes(b)).shape == (64, 64, 1)


def test_seeded_mutations_of_the_fixtures_decode_or_are_refused_as_the_service_does():
    originals = {p.name: p.read_bytes() for p in FIXTURES.glob("*.dcm")}
    cases = GOLDEN["mutations"]["cases"]
    assert len(cases) >= 300
    wrong = []
    for i, c in enumerate(cases):
        b = bytearray(originals[c["file"]][:c["length"]])
        for at, v in c["set"]:
            b[at] = v
        got = outcome(bytes(b), c)
        if got != expected(c, "file", "length", "set"):
            wrong.append((i, c["file"], got))
    assert wrong == []


def test_mutated_compressed_fixtures_give_a_refusal_or_an_image_never_another_error():
    """The JPEG Baseline fixtures are not in the golden mutations (what a damaged JPEG decodes to is
    the codec's affair), and the JPEG 2000 ones there are held to the words before the codec's when
    it refuses: here PIL's own failures must still come out as a DicomError."""
    import random
    rnd = random.Random(20261129)
    files = [(FIXTURES / f).read_bytes() for f in ["grey8-jpeg-baseline.dcm", "rgb8-jpeg-baseline.dcm", "grey8-rle.dcm", "rgb8-rle.dcm",
                                                  "grey8-jpeg2000-lossless.dcm", "rgb8-corner-jpeg2000-lossy-ict.dcm", "ct16-window-jpeg2000-lossless.dcm"]]
    for _ in range(600):
        b = bytearray(rnd.choice(files))
        for _ in range(1 + rnd.randrange(4)):
            if len(b) <= 129:  # cut down to the preamble: nothing left to edit
                break
            at = 128 + rnd.randrange(len(b) - 128)
            kind = rnd.randrange(5)
            if kind < 3:
                b[at] = rnd.randrange(256)
            elif kind == 3:
                b[at] = rnd.choice([0x00, 0xFF, 0x7F, 0x80])
            else:
                del b[at:]
        try:
            px = dicom.decode(bytes(b))
            assert px.dtype == np.uint8 and px.ndim == 3
        except DicomError as e:
            assert 400 <= e.status < 500


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
    (root / "Hand" / "scan-rle.dcm").write_bytes((FIXTURES / "grey8-rle.dcm").read_bytes())
    (root / "Hand" / "scan-jpeg.dcm").write_bytes((FIXTURES / "grey8-jpeg-baseline.dcm").read_bytes())
    (root / "Hand" / "sub" / "SCAN2.DCM").write_bytes((FIXTURES / "ct16-window.dcm").read_bytes())
    (root / "Hand" / "scan.jpeg").write_bytes(encapsulated_frame((FIXTURES / "grey8-jpeg-baseline.dcm").read_bytes()))
    (root / "Hand" / "._scan.dcm").write_bytes(b"\0\5\26\7")  # archive debris, skipped
    # the JPEG Baseline DICOM holds that very JPEG, decoded by the same PIL: equal, not merely close
    pairs = {"Hand/scan.dcm": "Hand/scan.jpeg", "Hand/scan-rle.dcm": "Hand/scan.jpeg", "Hand/scan-jpeg.dcm": "Hand/scan.jpeg"}
    if with_rgb:
        import tarfile
        (root / "Tumor").mkdir()
        with tarfile.open(DATA / "kather_crc_2016" / "images.tar") as tf:
            (root / "Tumor" / "tile.jpg").write_bytes(tf.extractfile(KATHER_JPEG).read())
        (root / "Tumor" / "tile.dcm").write_bytes((FIXTURES / "rgb8-explicit.dcm").read_bytes())
        (root / "Tumor" / "tile-planar.dcm").write_bytes((FIXTURES / "rgb8-planar1.dcm").read_bytes())
        (root / "Tumor" / "tile-rle.dcm").write_bytes((FIXTURES / "rgb8-rle.dcm").read_bytes())
        pairs.update({"Tumor/tile.dcm": "Tumor/tile.jpg", "Tumor/tile-planar.dcm": "Tumor/tile.jpg", "Tumor/tile-rle.dcm": "Tumor/tile.jpg"})
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


def test_a_deflate_bomb_is_refused_at_the_cap_not_inflated_whole():
    """The golden file's bomb made 8 MiB (inflating to 8 GiB): the same 413, holding about the cap in memory."""
    (head, _), (_, _), tail = next(m for m in GOLDEN["made"] if m["name"] == "deflated-bomb")["parts"]
    zeros = dicom.MAX_BYTES - len(head) // 2 - 64
    tracemalloc.start()
    try:
        with pytest.raises(DicomError) as e:
            dicom.decode(from_parts([[head, 1], ["00", zeros], tail]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (e.value.status, e.value.code) == (413, "image_too_large")
    assert str(e.value).startswith(f"DICOM's deflated data set inflates to more than {dicom.MAX_INFLATED_BYTES} bytes")
    assert peak < 3 * dicom.MAX_INFLATED_BYTES


def test_a_refused_dicom_in_a_class_folder_stops_the_load_naming_the_file(tmp_path):
    class_folder(tmp_path / "images", False)
    (tmp_path / "images" / "Hand" / "bigendian.dcm").write_bytes((FIXTURES / "grey8-bigendian.dcm").read_bytes())
    with pytest.raises(DicomError, match=r"^Hand/bigendian\.dcm: DICOM transfer syntax 1\.2\.840\.10008\.1\.2\.2 \(Explicit VR Big") as e:
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
    assert sum(len(a.ids) for a in after.splits.values()) == 5


def test_jpeg_ls_without_charls_says_what_to_install(monkeypatch):
    """A machine without libcharls2 is told so, not handed ctypes' OSError."""
    from medhash_model import dicom_codecs

    def missing(*_):
        raise OSError("libcharls.so.2: cannot open shared object file")
    monkeypatch.setattr(dicom_codecs, "_charls", None)
    monkeypatch.setattr(dicom_codecs.ctypes, "CDLL", missing)
    with pytest.raises(RuntimeError, match="install libcharls2"):
        dicom.decode((FIXTURES / "grey8-jpeg-ls.dcm").read_bytes())
