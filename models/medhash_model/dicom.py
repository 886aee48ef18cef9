"""DICOM Part 10 files -> 8-bit pixels for training and evaluation: the Python mirror of the
service's decoder, functions/encode/dicom.ts, with the size limits of its caller `decodeImage`
(functions/encode/image.ts) for a file sent as application/dicom. dicom.ts is the reference;
this file repeats it step by step (same walk, same supported subset, same limits, same refusals
with the same messages and the same HTTP status and code on `DicomError`), so a DICOM in a class
folder trains on the very pixels the service encodes it from. Spec: docs/ENCODING.md, "DICOM".
test/fixtures/dicom/decoded.json (scripts/fixtures/make-dicom-golden.ts) pins both sides.

What this owns: the Part 10 walk (file meta, then the data set's top level, sequences skipped by
their items, at most MAX_ELEMENTS elements and MAX_DEPTH levels; the Modality and VOI LUT
Sequences' first items read; an enhanced file's functional groups read for the decoded frame's
rescale, window and VOI LUT, the shared item and that frame's item alone), the pixel attributes of
group 0028, and their mapping to bytes: stored values masked to Bits Stored and sign-extended, the
modality rescale or Modality LUT, the first VOI window (LINEAR, LINEAR_EXACT, SIGMOID), else the
VOI LUT (its entry's top 8 bits, as DCMTK), else the stretch over the data's own range, MONOCHROME1 inverted; RGB kept (planar configuration 0 or 1). The transfer
syntaxes read are Explicit (deflated or not: a deflated data set is inflated first, under
MAX_INFLATED_BYTES, by zlib as dicom.ts's DecompressionStream does) and Implicit VR Little Endian,
RLE Lossless (decoded here, as dicom.ts does), JPEG Lossless (jpeg_lossless.py), JPEG Baseline and
8-bit JPEG Extended (the frame walked as image.ts's jpegHeader walks it, then decoded by PIL, as
preprocess.py decodes a JPEG file), JPEG-LS and JPEG 2000
(dicom_codecs.py: CharLS, and Pillow's OpenJPEG), one frame: a multi-frame file's `frame` is the caller's to
choose, and only that frame is located (one pass over the fragment table) and decoded; no patient, study or date field is read at all.

Where JavaScript semantics show in the result they are repeated: `Math.round` rounds halves up, and
a value stored into a Uint8Array wraps modulo 256 (NaN to 0). The arithmetic is float64 in
dicom.ts's order of operations (numpy's + - * / round as JavaScript's do); only SIGMOID's exp may
differ from V8's Math.exp in the last bit, which moves a byte only within that bit of a half.
And a JPEG Baseline frame is decoded by PIL (libjpeg) where the service uses mozjpeg: the pixels
agree to within the one grey level the JPEG parity tests allow (test/encode/parity.test.ts), and a
frame that passes the walk but that the codec cannot decode is refused by both with the codec's own
words after the same prefix. The grey mapping is a lookup table over the stored range, as in
dicom.ts, computed with numpy.
"""
from __future__ import annotations

import io
import json
import math
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class _Syntax:
    """A transfer syntax read here: its name, whether the data set is explicit VR, how the Pixel
    Data is stored ("native", "rle", "jpeg", "jpeg-lossless", "jpeg-ls" or "jpeg2000"), and for JPEG Lossless SV1 that
    predictor 1 alone is allowed; `deflated`: the data set after the file meta group is one raw
    DEFLATE stream; `extended`: JPEG Extended, whose frame header says whether its samples are 8
    bits, which alone are read."""
    name: str
    explicit: bool
    pixels: str
    sv1: bool = False
    deflated: bool = False
    extended: bool = False


SUPPORTED = {
    "1.2.840.10008.1.2": _Syntax("Implicit VR Little Endian", False, "native"),
    "1.2.840.10008.1.2.1": _Syntax("Explicit VR Little Endian", True, "native"),
    "1.2.840.10008.1.2.1.99": _Syntax("Deflated Explicit VR Little Endian", True, "native", deflated=True),
    "1.2.840.10008.1.2.4.50": _Syntax("JPEG Baseline", True, "jpeg"),
    "1.2.840.10008.1.2.4.51": _Syntax("JPEG Extended", True, "jpeg", extended=True),
    "1.2.840.10008.1.2.4.57": _Syntax("JPEG Lossless", True, "jpeg-lossless"),
    "1.2.840.10008.1.2.4.70": _Syntax("JPEG Lossless SV1", True, "jpeg-lossless", sv1=True),
    "1.2.840.10008.1.2.4.80": _Syntax("JPEG-LS Lossless", True, "jpeg-ls"),
    "1.2.840.10008.1.2.4.81": _Syntax("JPEG-LS Near-Lossless", True, "jpeg-ls"),
    "1.2.840.10008.1.2.4.90": _Syntax("JPEG 2000 Lossless", True, "jpeg2000"),
    "1.2.840.10008.1.2.4.91": _Syntax("JPEG 2000", True, "jpeg2000"),
    "1.2.840.10008.1.2.5": _Syntax("RLE Lossless", True, "rle"),
}

#: Names of the common transfer syntaxes this decoder refuses, for the error message.
REFUSED = {
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
}

#: Explicit-VR value representations with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"])
UNDEFINED_LENGTH = 0xFFFFFFFF
#: Far above any real header (a few hundred elements), far below what costs time.
MAX_ELEMENTS = 50_000
MAX_DEPTH = 8

#: decodeImage's DEFAULT_LIMITS (functions/encode/image.ts).
MAX_BYTES = 8 * 1024 * 1024
MAX_SIDE = 4096
MAX_PIXELS = 16 * 1024 * 1024
#: The most a deflated file's data set may inflate to (dicom.ts's MAX_INFLATED_BYTES): 4 x MAX_BYTES.
MAX_INFLATED_BYTES = 4 * MAX_BYTES
#: Input fed to the inflater at a time, as dicom.ts feeds its DecompressionStream.
_INFLATE_CHUNK = 4096
#: The largest frame index decodeImage takes (checkFrame: a JavaScript safe integer); past it, a 400.
MAX_FRAME = 2 ** 53 - 1

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


def _frame_out_of_range(frame: int, frames: int) -> DicomError:
    """A frame index out of the file's range: the caller's mistake (dicom.ts's frameOutOfRange)."""
    return DicomError(422, "frame_out_of_range",
                      f"frame {frame} is out of range: the image has {frames} frame{'' if frames == 1 else 's'} (0 to {frames - 1})")


class DicomError(ValueError):
    """A refused file: `status` and `code` are the service's answer for it (400 `empty_image`,
    413 `image_too_large`, 415 `unsupported_image_type`, 422 `corrupt_image`), the message its."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code

    def __reduce__(self):
        # through a worker process of data.py's pool intact (the default would pass the message alone)
        return DicomError, (self.status, self.code, str(self))


def _corrupt(message: str) -> DicomError:
    return DicomError(422, "corrupt_image", message)


def _unsupported(message: str) -> DicomError:
    return DicomError(415, "unsupported_image_type", message)


# Media Storage Directory Storage (PS3.4 Annex F), the SOP class of a DICOMDIR, whatever its file name.
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


def _no_pixel_data() -> DicomError:
    """A well-formed DICOM object without an image (dicom.ts's NotAnImage): no Pixel Data at its top level, or a DICOMDIR."""
    return _corrupt("DICOM has no Pixel Data (7FE0,0010) at its top level: it is not an image")


def check_bytes(data: bytes) -> None:
    """decodeImage's first checks, on any image's bytes: none at all, or more than the limit."""
    if len(data) == 0:
        raise DicomError(400, "empty_image", "image is empty (0 bytes)")
    if len(data) > MAX_BYTES:
        raise DicomError(413, "image_too_large", f"image is {len(data)} bytes; at most {MAX_BYTES} ({MAX_BYTES // 2 ** 20} MiB)")


def is_dicom(b: bytes) -> bool:
    """True when the bytes are a DICOM Part 10 file (128-byte preamble, then "DICM")."""
    return len(b) >= 132 and b[128:132] == b"DICM"


def sniffs_as_dicom(b: bytes) -> bool:
    """Whether the service, given these bytes without a content type, reads them as DICOM: its
    sniff tries the PNG signature and the JPEG start first (a preamble may begin with either)."""
    return is_dicom(b) and not b.startswith((_PNG, _JPEG))


# DICOM's decimal and integer strings (PS3.5 6.2, DS and IS), as dicom.ts reads them
_DECIMAL_STRING = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _json(s: str) -> str:
    """`JSON.stringify(s)` of a string."""
    return json.dumps(s, ensure_ascii=False)


def _js_round(v: np.ndarray) -> np.ndarray:
    """`Math.round`: the nearest integer, halves toward +infinity (NaN stays NaN)."""
    f = np.floor(v)
    with np.errstate(invalid="ignore"):
        return np.where(v - f >= 0.5, f + 1, f)


def _to_uint8(v: np.ndarray) -> np.ndarray:
    """A number stored into a Uint8Array: NaN and infinities 0, else truncated modulo 256."""
    v = np.asarray(v, dtype=np.float64)
    finite = np.isfinite(v)
    return np.where(finite, np.mod(np.trunc(np.where(finite, v, 0.0)), 256.0), 0.0).astype(np.uint8)


# --- the walk --------------------------------------------------------------------------------

def _hex4(n: int) -> str:
    return f"{n:04X}"


def _ascii(v: bytes) -> str:
    """The first 64 bytes of a value as text: every attribute read here is shorter."""
    return v[:64].decode("latin-1")


_SHARED_GROUPS = 0x52009229
_PER_FRAME_GROUPS = 0x52009230
_PIXEL_VALUE_TRANSFORMATION = 0x00289145
_FRAME_VOI_LUT = 0x00289132
_MODALITY_LUT_SEQUENCE = 0x00283000
_VOI_LUT_SEQUENCE = 0x00283010


@dataclass
class _LutSequence:
    """A Modality or VOI LUT Sequence as walked: how many items it has, and its first item's group
    0028 values by element (LUT Descriptor, LUT Data)."""
    items: int = 0
    values: dict[int, bytes] = field(default_factory=dict)


@dataclass
class _Macro:
    """A macro's values: its first item's group 0028 values by element and, for a Frame VOI LUT,
    the VOI LUT Sequence that item holds (the Frame VOI LUT With LUT macro)."""
    values: dict[int, bytes] = field(default_factory=dict)
    lut: _LutSequence | None = None


@dataclass
class _Macros:
    """The two functional group macros read here; None when the group item lacks it. rescale:
    Pixel Value Transformation (0028,9145); voi: Frame VOI LUT (0028,9132)."""
    rescale: _Macro | None = None
    voi: _Macro | None = None


@dataclass
class _ItemReader:
    """How to read an item the walk descends into: where its group 0028 values go (by element),
    which of its sequences to read (tag -> a reader of item k, returning None to skip it), and
    (`name`) the sequence it is an item of, for a LUT's item: an element running past it is then named."""
    values: dict[int, bytes] | None = None
    sequence: Callable[[int], Callable[[int], _ItemReader | None] | None] | None = None
    name: str | None = None


def _lut_sequence(tag: int, keep):
    """A LUT sequence, handed to `keep` as its walk starts (so one without items is seen): its
    items counted, item 0's values kept, the others skipped."""
    lut = _LutSequence()
    keep(lut)

    def read(k: int) -> _ItemReader | None:
        lut.items = k + 1
        return _ItemReader(values=lut.values, name=_label(tag & 0xFFFF)) if k == 0 else None
    return read


def _first_item(keep, lut_tag: int | None = None):
    """Item 0 of a macro's sequence, its values (and a Frame VOI LUT's VOI LUT Sequence) into a new
    macro handed to `keep`; the other items skipped."""
    def read(k: int) -> _ItemReader | None:
        if k != 0:
            return None
        macro = _Macro()
        keep(macro)
        return _ItemReader(values=macro.values, sequence=lambda tag: (
            _lut_sequence(tag, lambda v: setattr(macro, "lut", v)) if tag == lut_tag else None))
    return read


def _group_item(into: _Macros) -> _ItemReader:
    """A functional group item: its two macros into `into`. The Frame VOI LUT may hold a VOI LUT
    Sequence (the Frame VOI LUT With LUT macro, PS3.3 C.7.6.16.2.10b); the Pixel Value
    Transformation macro holds rescale alone (no Modality LUT Sequence), so only its values are read."""
    def sequence(tag: int):
        if tag == _PIXEL_VALUE_TRANSFORMATION:
            return _first_item(lambda v: setattr(into, "rescale", v))
        if tag == _FRAME_VOI_LUT:
            return _first_item(lambda v: setattr(into, "voi", v), _VOI_LUT_SEQUENCE)
        return None
    return _ItemReader(sequence=sequence)


@dataclass
class _Walked:
    """What the walk keeps: the transfer syntax, group 0028's values by element, the Pixel Data
    offset and length (UNDEFINED_LENGTH when encapsulated, the offset then where its first item
    starts), item 0 of the Shared Functional Groups Sequence, item `frame` of the Per-frame one,
    how many items that has (None: no such sequence), and the top level's Modality LUT Sequence
    (0028,3000) and VOI LUT Sequence (0028,3010) when present."""
    syntax: _Syntax
    attrs: dict[int, bytes]
    pixel_offset: int
    pixel_length: int
    shared: _Macros
    per_frame: _Macros
    per_frame_items: int | None
    modality_lut: _LutSequence | None = None
    voi_lut: _LutSequence | None = None


class _Walker:
    def __init__(self, b: bytes, frame: int = 0):
        self.b = b
        self.elements = 0
        #: whose per-frame functional group to read
        self.frame = frame

    def _u16(self, pos: int) -> int:
        return self.b[pos] | (self.b[pos + 1] << 8)

    def _u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.b, pos)[0]

    def header(self, pos: int, explicit: bool) -> tuple[int, int, int, int, str | None]:
        """(group, element, length, value start, VR) of the element header at `pos`. Items and
        delimiters (group FFFE) have no VR in any syntax; the VR is None for them and in implicit VR."""
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise _corrupt(f"DICOM has more than {MAX_ELEMENTS} elements before its pixel data")
        n = len(self.b)
        if pos + 8 > n:
            raise _corrupt(f"DICOM is truncated: an element header at byte {pos} runs past the end")
        group, element = self._u16(pos), self._u16(pos + 2)
        if group == 0xFFFE or not explicit:
            return group, element, self._u32(pos + 4), pos + 8, None
        c0, c1 = self.b[pos + 4], self.b[pos + 5]
        if not (0x41 <= c0 <= 0x5A and 0x41 <= c1 <= 0x5A):
            raise _corrupt(f"DICOM element ({_hex4(group)},{_hex4(element)}) at byte {pos} has no value representation, "
                           "though the transfer syntax says explicit VR")
        vr = chr(c0) + chr(c1)
        if vr in LONG_VRS:
            if pos + 12 > n:
                raise _corrupt(f"DICOM is truncated: an element header at byte {pos} runs past the end")
            return group, element, self._u32(pos + 8), pos + 12, vr
        return group, element, self._u16(pos + 6), pos + 8, vr

    def end(self, group: int, element: int, length: int, value: int, _vr: str | None = None) -> int:
        """The position after a defined-length value, checked to lie inside the file."""
        end = value + length
        if end > len(self.b):
            raise _corrupt(f"DICOM is truncated: element ({_hex4(group)},{_hex4(element)}) declares {length} bytes, "
                           f"{len(self.b) - value} are left")
        return end

    @staticmethod
    def _sequence_vr(vr: str | None) -> bool:
        """A defined-length value read as a sequence: VR SQ, or any in implicit VR (where the tag alone says)."""
        return vr == "SQ" or vr is None

    def sequence(self, pos: int, end: int | None, explicit: bool, depth: int, read=None) -> int:
        """Walks a sequence's items from `pos` up to `end` (a defined length) or, when None, its
        Sequence Delimitation Item. `read(k)` says how to read item k; one it skips is passed over
        by its length, or, of undefined length, by walking its elements as before."""
        if depth > MAX_DEPTH:
            raise _corrupt(f"DICOM nests sequences more than {MAX_DEPTH} deep")
        k = 0
        while True:
            if end is not None and pos >= end:
                if pos > end:
                    raise _corrupt(f"DICOM sequence ending at byte {end} holds an item running to byte {pos}")
                return pos
            h = self.header(pos, explicit)
            group, element, length, value, _ = h
            if end is None and group == 0xFFFE and element == 0xE0DD:
                return value
            if group != 0xFFFE or element != 0xE000:
                raise _corrupt(f"DICOM sequence holds ({_hex4(group)},{_hex4(element)}) where an item belongs")
            r = read(k) if read is not None else None
            k += 1
            if length == UNDEFINED_LENGTH:
                pos = self.item(value, None, explicit, depth, r)
            else:
                pos = self.item(value, self.end(*h), explicit, depth, r) if r is not None else self.end(*h)

    def item(self, pos: int, end: int | None, explicit: bool, depth: int, read: _ItemReader | None) -> int:
        """Walks an item's data set up to `end` (a defined length) or, when None, its Item
        Delimitation Item, keeping what `read` asks for."""
        while True:
            if end is not None and pos >= end:
                if pos > end:
                    raise _corrupt(f"DICOM item ending at byte {end} holds an element running to byte {pos}")
                return pos
            h = self.header(pos, explicit)
            group, element, length, value, vr = h
            if end is None and group == 0xFFFE and element == 0xE00D:
                return value
            # asked only of an element walked as a sequence: a LUT sequence's reader counts its items from there
            walked = length == UNDEFINED_LENGTH or self._sequence_vr(vr)
            inner = read.sequence((group << 16) | element) if walked and read is not None and read.sequence is not None else None
            if length == UNDEFINED_LENGTH:
                pos = self.sequence(value, None, explicit, depth + 1, inner)
            elif inner is not None:
                pos = self.sequence(value, self.end(*h), explicit, depth + 1, inner)
            else:
                nxt = self.end(*h)
                if read is not None and read.name is not None and end is not None and nxt > end:
                    raise _corrupt(f"DICOM's {_tag_name(group, element)} in the first item of the {read.name} runs to byte {nxt}, "
                                   f"past the item's end at byte {end}")
                if read is not None and read.values is not None and group == 0x0028:
                    read.values[element] = self.b[value:nxt]
                pos = nxt

    def meta(self) -> tuple[_Syntax, int, str]:
        """The file meta group (0002): the transfer syntax, one this decoder reads (415 otherwise), where the
        data set starts, and the Media Storage SOP Class UID."""
        b = self.b
        pos = 132
        syntax = ""
        sop_class = ""
        # the file meta group (0002) is explicit VR little endian whatever the data set's syntax
        while pos + 2 <= len(b) and self._u16(pos) == 0x0002:
            h = self.header(pos, True)
            if h[2] == UNDEFINED_LENGTH:
                raise _corrupt("DICOM file meta header has an element of undefined length")
            end = self.end(*h)
            if h[1] == 0x0010:
                syntax = _ascii(b[h[3]:end]).rstrip("\0 ")
            if h[1] == 0x0002:
                sop_class = _ascii(b[h[3]:end]).rstrip("\0 ")
            pos = end
        if syntax not in SUPPORTED:
            name = REFUSED[syntax] if syntax in REFUSED else "an unsupported transfer syntax" if syntax else "no transfer syntax"
            raise _unsupported(f"DICOM transfer syntax {syntax or '(missing)'} ({name}) is not supported: send the file "
                               "uncompressed, in Explicit (deflated or not) or Implicit VR Little Endian (e.g. dcmdjpeg or "
                               "gdcmconv --raw), or in RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS "
                               "or JPEG 2000")
        return SUPPORTED[syntax], pos, sop_class

    def walk(self) -> _Walked:
        """The file's transfer syntax, pixel attributes and Pixel Data, and the decoded frame's functional
        groups (_Walked), of a file whose data set is plain (a deflated one's inflated by _inflated first)."""
        b = self.b
        ts, pos, sop_class = self.meta()
        # a DICOMDIR is never an image (PS3.3 F.3), and a large one's directory records would pass
        # MAX_ELEMENTS: told by its meta group, not walked (the mirror of dicom.ts's walk)
        if sop_class == MEDIA_STORAGE_DIRECTORY:
            raise _no_pixel_data()
        attrs: dict[int, bytes] = {}
        shared = _Macros()
        per_frame = _Macros()
        per_frame_items: int | None = None
        luts: dict[int, _LutSequence] = {}

        def groups(tag: int):
            """The functional groups: item 0 of the shared sequence, item `frame` of the per-frame one
            (the others only counted, or walked as any undefined-length item is)."""
            nonlocal shared, per_frame, per_frame_items
            into = _Macros()
            if tag == _SHARED_GROUPS:
                shared = into
                return lambda k: _group_item(into) if k == 0 else None
            per_frame = into
            per_frame_items = 0

            def read(k: int) -> _ItemReader | None:
                nonlocal per_frame_items
                per_frame_items = k + 1
                return _group_item(into) if k == self.frame else None
            return read

        while pos < len(b):
            h = self.header(pos, ts.explicit)
            group, element, length, value, vr = h
            if group == 0x7FE0 and element == 0x0010:
                encapsulated = length == UNDEFINED_LENGTH
                if encapsulated and ts.pixels == "native":
                    raise _corrupt("DICOM pixel data is encapsulated in an uncompressed transfer syntax")
                if not encapsulated and ts.pixels != "native":
                    raise _corrupt(f"DICOM pixel data is not encapsulated, though the transfer syntax is {ts.name}")
                # its length (or its items) is checked against the file after the size limits (a 413 first)
                return _Walked(ts, attrs, value, length, shared, per_frame, per_frame_items,
                               luts.get(_MODALITY_LUT_SEQUENCE), luts.get(_VOI_LUT_SEQUENCE))
            tag = (group << 16) | element
            is_group = tag in (_SHARED_GROUPS, _PER_FRAME_GROUPS)
            is_lut = tag in (_MODALITY_LUT_SEQUENCE, _VOI_LUT_SEQUENCE)
            if length == UNDEFINED_LENGTH or ((is_group or is_lut) and self._sequence_vr(vr)):
                read = (groups(tag) if is_group
                        else _lut_sequence(tag, lambda v, t=tag: luts.__setitem__(t, v)) if is_lut else None)
                pos = self.sequence(value, None if length == UNDEFINED_LENGTH else self.end(*h), ts.explicit, 1, read)
                continue
            end = self.end(*h)
            if group == 0x0028:
                attrs[element] = b[value:end]
            pos = end
        raise _no_pixel_data()


def _inflated(data: bytes) -> bytes:
    """dicom.ts's `inflated`: a deflated file (PS3.5 A.5) with its data set inflated after its meta
    group, any other as it is. Fed a chunk at a time, and each chunk inflated no further than the cap,
    so a bomb stops there (413); a stream that is corrupt or cut short is a 422. Bytes after its final
    block are ignored, as Node 22's DecompressionStream ignores them (the Compression Standard, and so
    browsers, refuse them)."""
    syntax, end, _ = _Walker(data).meta()
    if not syntax.deflated:
        return data
    d = zlib.decompressobj(-15)
    parts = [data[:end]]
    total = 0
    try:
        for at in range(end, len(data), _INFLATE_CHUNK):
            pending = data[at:at + _INFLATE_CHUNK]
            while pending and not d.eof:
                piece = d.decompress(pending, MAX_INFLATED_BYTES + 1 - total)
                total += len(piece)
                if total > MAX_INFLATED_BYTES:
                    raise DicomError(413, "image_too_large", f"DICOM's deflated data set inflates to more than {MAX_INFLATED_BYTES} "
                                     f"bytes ({MAX_INFLATED_BYTES // 2 ** 20} MiB), the most a deflated file may hold")
                parts.append(piece)
                pending = d.unconsumed_tail
            if d.eof:
                break
    except zlib.error:
        pass  # a broken stream never reaches its end: refused below
    if not d.eof:
        raise _corrupt(f"DICOM's deflated data set (from byte {end}) is not a whole DEFLATE stream: it is corrupt or cut short")
    return b"".join(parts)


# --- the pixel attributes --------------------------------------------------------------------

_NAMES = {
    0x0002: "Samples per Pixel", 0x0004: "Photometric Interpretation", 0x0006: "Planar Configuration",
    0x0008: "Number of Frames", 0x0010: "Rows", 0x0011: "Columns", 0x0100: "Bits Allocated", 0x0101: "Bits Stored",
    0x0102: "High Bit", 0x0103: "Pixel Representation", 0x1050: "Window Center", 0x1051: "Window Width",
    0x1052: "Rescale Intercept", 0x1053: "Rescale Slope", 0x1056: "VOI LUT Function", 0x3000: "Modality LUT Sequence",
    0x3002: "LUT Descriptor", 0x3006: "LUT Data", 0x3010: "VOI LUT Sequence",
}


def _label(e: int) -> str:
    return f"{_NAMES[e]} (0028,{_hex4(e)})"


def _tag_name(group: int, element: int) -> str:
    """An element by its name when it has one here, else by its tag."""
    return _label(element) if group == 0x0028 and element in _NAMES else f"({_hex4(group)},{_hex4(element)})"


@dataclass(frozen=True)
class _Lut:
    """A LUT to apply: the first input value mapped, the bits per entry, the entries (masked to those bits)."""
    first: int
    bits: int
    data: np.ndarray


#: The most entries a LUT Descriptor can declare (0 stands for it).
_MAX_LUT_ENTRIES = 65536


def _lookup_table(lut: _LutSequence, e: int, where: str, signed: bool) -> _Lut:
    """dicom.ts's lookupTable: a LUT sequence's first item as a LUT (PS3.3 C.11.1.1, C.11.2.1.1),
    LUT Descriptor (entries, 0 meaning 65536; the first input value mapped, signed when `signed`;
    bits per entry, 8 to 16) and LUT Data, a 16-bit word an entry or, for 8 bits, a byte an entry
    packed two a word; entries masked to their bits. Anything that disagrees is a 422 naming it."""
    of = f"{_label(e)}{where}"
    if lut.items == 0:
        raise _corrupt(f"DICOM's {of} has no item")
    descriptor = lut.values.get(0x3002)
    if descriptor is None:
        raise _corrupt(f"DICOM's {of} has no {_label(0x3002)}")
    if len(descriptor) != 6:
        raise _corrupt(f"DICOM's {_label(0x3002)} in the {of} is {len(descriptor)} bytes; it is three 16-bit values (6 bytes)")
    entries, first_u, bits = struct.unpack("<3H", descriptor)
    entries = entries or _MAX_LUT_ENTRIES
    first = struct.unpack("<h", descriptor[2:4])[0] if signed else first_u
    if bits < 8 or bits > 16:
        raise _corrupt(f"DICOM's {_label(0x3002)} in the {of} gives {bits} bits per entry; it is 8 to 16")
    raw = lut.values.get(0x3006)
    if raw is None:
        raise _corrupt(f"DICOM's {of} has no {_label(0x3006)}")
    if len(raw) > 2 * _MAX_LUT_ENTRIES:
        raise _corrupt(f"DICOM's {_label(0x3006)} in the {of} is {len(raw)} bytes, more than {_MAX_LUT_ENTRIES} entries of 16 bits")
    packed = bits == 8 and len(raw) != 2 * entries and len(raw) == entries + entries % 2
    if len(raw) != 2 * entries and not packed:
        alt = f", or {entries + entries % 2} packed" if bits == 8 else ""
        raise _corrupt(f"DICOM's {_label(0x3006)} in the {of} is {len(raw)} bytes; its {_label(0x3002)} declares {entries} "
                       f"entries of {bits} bits ({2 * entries} bytes{alt})")
    data = np.frombuffer(raw, dtype="u1" if packed else "<u2", count=entries).astype(np.int64) & ((1 << bits) - 1)
    return _Lut(first, bits, data)


def _lookup(lut: _Lut, x: np.ndarray) -> np.ndarray:
    """dicom.ts's lookup: a LUT's entries for inputs `x`, each by its integer part (toward zero) from
    the first value mapped, the ends beyond."""
    n = len(lut.data)
    with np.errstate(invalid="ignore"):
        at = np.clip(np.trunc(x), lut.first, lut.first + n - 1)
    return lut.data[at.astype(np.int64) - lut.first]


def _text(attrs: dict[int, bytes], e: int) -> str | None:
    """The first value of a text attribute (DS, IS, CS, UI), trimmed; None when absent or empty."""
    v = attrs.get(e)
    if v is None:
        return None
    s = _ascii(v).split("\\")[0].strip("\0 ")
    return None if s == "" else s


@dataclass
class _Attributes:
    syntax: _Syntax
    #: Number of Frames (1 when absent), and the frame to decode
    frames: int
    frame: int
    rows: int
    columns: int
    samples: int
    photometric: str
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar: int
    slope: float
    intercept: float
    #: (centre, width, VOI LUT Function) of the first window, or None
    window: tuple[float, float, str] | None
    pixel_offset: int
    pixel_length: int
    #: the Modality LUT, which replaces the rescale, and the VOI LUT, used without a window (PS3.3 C.11.1, C.11.2)
    modality_lut: _Lut | None = None
    voi_lut: _Lut | None = None


def _attributes(w: _Walked, file_length: int, frame: int | None) -> _Attributes:
    """Group 0028 read and checked in dicom.ts's order, so a file with several faults gets the
    same (first) refusal."""
    syntax, attrs = w.syntax, w.attrs
    top = (attrs, "")

    def source(macro: str) -> tuple[dict[int, bytes], str, _LutSequence | None]:
        """Where a macro's values are read, how a message names it, and its LUT sequence (a Modality
        or VOI LUT Sequence): the functional groups' macro replaces the top-level attributes (its
        LUT sequence included), the frame's own item the shared one, each macro whole
        (docs/ENCODING.md, "Enhanced multi-frame files")."""
        own, shared = getattr(w.per_frame, macro), getattr(w.shared, macro)
        if own is not None:
            return (own.values, f" in frame {0 if frame is None else frame}'s item of the Per-frame Functional Groups Sequence (5200,9230)",
                    own.lut)
        if shared is not None:
            return shared.values, " in the Shared Functional Groups Sequence (5200,9229)", shared.lut
        return attrs, "", w.modality_lut if macro == "rescale" else w.voi_lut

    rescale = source("rescale")
    voi = source("voi")

    def us(e: int, fallback: int | None = None) -> int:
        v = attrs.get(e)
        if v is None or len(v) == 0:
            if fallback is None:
                raise _corrupt(f"DICOM has no {_label(e)}, which an image needs")
            return fallback
        if len(v) < 2:
            raise _corrupt(f"DICOM's {_label(e)} is not a 16-bit value")
        return v[0] | (v[1] << 8)

    def num(e: int, src: tuple = top) -> float | None:
        s = _text(src[0], e)
        if s is None:
            return None
        n = float(s) if _DECIMAL_STRING.fullmatch(s) else math.nan
        if not math.isfinite(n):
            raise _corrupt(f"DICOM's {_label(e)}{src[1]} is not a number: {_json(s)}")
        return n

    bits_allocated = us(0x0100)
    bits_stored = us(0x0101, bits_allocated)
    high_bit = us(0x0102, bits_stored - 1)
    representation = us(0x0103, 0)
    frames = num(0x0008)
    frames = 1.0 if frames is None else frames
    # a Modality LUT Sequence replaces the rescale, which is then not read
    slope = None if rescale[2] else num(0x1053, rescale)
    slope = 1.0 if slope is None else slope
    centre = num(0x1050, voi)
    width = num(0x1051, voi)
    rows = us(0x0010)
    columns = us(0x0011)
    samples = us(0x0002, 1)
    photometric = (_text(attrs, 0x0004) or "").upper()
    planar = us(0x0006, 0)
    intercept = None if rescale[2] else num(0x1052, rescale)
    window = (centre, width, (_text(voi[0], 0x1056) or "LINEAR").upper()) if centre is not None and width is not None else None
    a = _Attributes(syntax, int(frames) if float(frames).is_integer() and 1 <= frames <= file_length else 1,
                    0 if frame is None else frame, rows, columns, samples, photometric, bits_allocated, bits_stored, representation == 1, planar, slope,
                    0.0 if intercept is None else intercept, window, w.pixel_offset, w.pixel_length)

    grey = a.photometric in ("MONOCHROME1", "MONOCHROME2")
    # in JPEG the YCbCr -> RGB conversion is the JPEG decoder's, as for any JPEG; in JPEG 2000 the
    # inverse component transform (RCT, ICT) is OpenJPEG's
    jpeg = syntax.pixels == "jpeg"
    j2k = syntax.pixels == "jpeg2000"
    colour = (a.photometric == "RGB" or (jpeg and a.photometric in ("YBR_FULL_422", "YBR_FULL"))
              or (j2k and a.photometric in ("YBR_RCT", "YBR_ICT")))
    if not (grey and a.samples == 1) and not (colour and a.samples == 3):
        accepted = ("MONOCHROME1, MONOCHROME2, RGB, YBR_FULL or YBR_FULL_422" if jpeg
                    else "MONOCHROME1, MONOCHROME2, RGB, YBR_RCT or YBR_ICT" if j2k else "MONOCHROME1, MONOCHROME2 or RGB")
        raise _unsupported(f"DICOM photometric interpretation {a.photometric or '(missing)'} with {a.samples} sample(s) "
                           f"per pixel is not supported ({accepted})")
    if bits_allocated not in (8, 16):
        raise _unsupported(f"DICOM with {bits_allocated} bits allocated per sample is not supported (8 or 16)")
    if colour and bits_allocated != 8:
        raise _unsupported(f"DICOM {a.photometric} with 16-bit samples is not supported")
    # JPEG Extended's frame header says whether its samples are 8 bits (_jpeg_frame)
    if jpeg and not a.syntax.extended and bits_allocated != 8:
        raise _corrupt(f"DICOM in JPEG Baseline declares {bits_allocated} bits allocated; JPEG Baseline holds 8-bit samples")
    if bits_stored < 1 or bits_stored > bits_allocated:
        raise _corrupt(f"DICOM declares {bits_stored} bits stored in {bits_allocated} allocated")
    if high_bit != bits_stored - 1:
        raise _unsupported(f"DICOM with High Bit {high_bit} for {bits_stored} bits stored is not supported "
                           "(only High Bit = Bits Stored - 1)")
    if representation > 1:
        raise _corrupt(f"DICOM's {_label(0x0103)} is {representation}; it must be 0 (unsigned) or 1 (signed)")
    if a.planar > 1:
        raise _corrupt(f"DICOM's {_label(0x0006)} is {a.planar}; it must be 0 or 1")
    if not (float(frames).is_integer()) or frames < 1:
        raise _corrupt(f"DICOM's {_label(0x0008)} is {_text(attrs, 0x0008)}")
    # every frame takes at least a byte of the file: a count beyond that is a lie, and a cap on what it can cost
    if frames > file_length:
        raise _corrupt(f"DICOM's {_label(0x0008)} is {_text(attrs, 0x0008)}, more frames than the file has bytes ({file_length})")
    if w.per_frame_items is not None and w.per_frame_items != frames:
        raise _corrupt(f"DICOM's Per-frame Functional Groups Sequence (5200,9230) has {w.per_frame_items} "
                       f"item{'' if w.per_frame_items == 1 else 's'}; {_label(0x0008)} is {a.frames} (one item a frame)")
    if frames > 1 and frame is None:
        raise _unsupported(f"DICOM has {a.frames} frames: choose one with `frame` (0 to {a.frames - 1})")
    if frame is not None and frame >= frames:
        raise _frame_out_of_range(frame, a.frames)
    if slope == 0:
        raise _corrupt(f"DICOM's {_label(0x1053)}{rescale[1]} is 0, which would make every pixel the same")
    if a.window and a.window[2] not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise _unsupported(f"DICOM {_label(0x1056)} {a.window[2]}{voi[1]} is not supported (LINEAR, LINEAR_EXACT or SIGMOID)")
    if rescale[2]:
        a.modality_lut = _lookup_table(rescale[2], 0x3000, rescale[1], a.signed)
    if voi[2]:
        # the first value a VOI LUT maps is signed when the modality transform's output can be
        # negative, as DCMTK reads it: never after a Modality LUT, else over the stored range
        lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if a.signed else (0, 2 ** bits_stored - 1)
        signed = a.modality_lut is None and min(lo * a.slope + a.intercept, hi * a.slope + a.intercept) < 0
        a.voi_lut = _lookup_table(voi[2], 0x3010, voi[1], signed)
    return a


# --- the pixels ------------------------------------------------------------------------------

def _voi(window: tuple[float, float, str], x: np.ndarray) -> np.ndarray | None:
    """The VOI function of PS3.3 C.11.2.1.2 and C.11.2.1.3 to 0..255 (float64, before rounding),
    or None for a window it cannot use. The operations are dicom.ts's, in its order."""
    c, w, fn = window
    with np.errstate(all="ignore"):
        if fn == "LINEAR":
            if w < 1:
                return None
            lo = c - 0.5 - (w - 1) / 2
            hi = c - 0.5 + (w - 1) / 2
            mid = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255 if w != 1 else np.zeros_like(x)
            return np.where(x <= lo, 0.0, np.where(x > hi, 255.0, mid))
        if w <= 0:
            return None
        if fn == "LINEAR_EXACT":
            return np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, 255.0, ((x - c) / w + 0.5) * 255))
        return 255 / (1 + np.exp((-4 * (x - c)) / w))


def _grey_pixels(a: _Attributes, raw_bytes: bytes) -> np.ndarray:
    """Grey pixels from the samples as an uncompressed file stores them (little endian): stored
    values masked to Bits Stored and sign-extended, then through a lookup table from stored value
    to byte (at most 65536 entries)."""
    n = a.rows * a.columns
    dtype = "<u2" if a.bits_allocated == 16 else "u1"
    raw = np.frombuffer(raw_bytes, dtype=dtype, count=n).astype(np.int64)
    mask = (1 << a.bits_stored) - 1
    sign = 1 << (a.bits_stored - 1)
    stored = raw & mask
    if a.signed:
        stored = np.where(stored & sign, stored - mask - 1, stored)
    lo_s, hi_s = int(stored.min()), int(stored.max())
    s = np.arange(lo_s, hi_s + 1, dtype=np.float64)

    def modality(v):
        if a.modality_lut is not None:
            return _lookup(a.modality_lut, v).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            return v * a.slope + a.intercept

    voi = _voi(a.window, modality(s)) if a.window else None
    if voi is not None:
        to_byte = _js_round(voi)
    elif a.voi_lut is not None:
        # the entry's top 8 of its bits, as DCMTK scales a VOI LUT's output to 8 bits
        to_byte = (_lookup(a.voi_lut, modality(s)) >> (a.voi_lut.bits - 8)).astype(np.float64)
    elif (a.bits_allocated == 8 and a.bits_stored == 8 and not a.signed and a.modality_lut is None
          and a.slope == 1 and a.intercept == 0):
        to_byte = s
    else:
        # the stretch over the data's own range: rescale is linear, so its ends are the stored ends;
        # a Modality LUT's are its least and greatest output over the stored range
        ends = modality(s) if a.modality_lut is not None else modality(np.array([lo_s, hi_s], dtype=np.float64))
        lo, hi = float(ends.min()), float(ends.max())
        if hi > lo:
            with np.errstate(all="ignore"):
                to_byte = _js_round(((modality(s) - lo) / (hi - lo)) * 255)
        else:
            to_byte = np.zeros_like(s)
    lut = _to_uint8(255 - to_byte if a.photometric == "MONOCHROME1" else to_byte)
    return lut[stored - lo_s].reshape(a.rows, a.columns, 1)


def _rgb_pixels(a: _Attributes, raw: bytes, planar: int) -> np.ndarray:
    """RGB pixels, interleaved, from the samples in the given planar configuration."""
    n = a.rows * a.columns
    src = np.frombuffer(raw, dtype=np.uint8, count=3 * n)
    if planar == 0:
        return src.copy().reshape(a.rows, a.columns, 3)
    # planar configuration 1 stores the three colour planes one after the other
    return src.reshape(3, n).T.copy().reshape(a.rows, a.columns, 3)


def _check_size(width: int, height: int) -> None:
    """decodeImage's checkSize with the default limits."""
    if width == 0 or height == 0:
        raise _corrupt(f"image declares an empty size {width}x{height}")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise DicomError(413, "image_too_large", f"image is {width}x{height}; width and height may be at most {MAX_SIDE}")
    if width * height > MAX_PIXELS:
        raise DicomError(413, "image_too_large", f"image is {width}x{height} = {width * height} pixels; at most {MAX_PIXELS}")


def _pixels(a: _Attributes, raw: bytes, planar: int) -> np.ndarray:
    """The one path every transfer syntax ends in: stored samples -> 8-bit pixels."""
    return _rgb_pixels(a, raw, planar) if a.samples == 3 else _grey_pixels(a, raw)


# --- encapsulated pixel data: RLE Lossless and JPEG Baseline ---------------------------------

_ITEM = 0xE000
_SEQUENCE_DELIMITATION = 0xE0DD


def _ends_with_eoi(f: bytes) -> bool:
    """Whether a JPEG fragment ends a JPEG stream: its last bytes are EOI (FF D9), maybe padded with one 00."""
    n = len(f) - 1 if f[-1:] == b"\0" else len(f)
    return n >= 2 and f[n - 2] == 0xFF and f[n - 1] == 0xD9


class _Span:
    """Where frame `index` lies among the items (start of its first, end of its last) by one way of
    numbering fragments into frames, and that numbering's frame of the current fragment."""

    def __init__(self) -> None:
        self.start = -1
        self.end = -1
        self.frame = 0

    def see(self, index: int, at: int, nxt: int) -> None:
        if self.frame == index:
            if self.start < 0:
                self.start = at
            self.end = nxt


def _encapsulated_frame(b: bytes, pos: int, frames: int, index: int, jpeg: bool) -> bytes:
    """dicom.ts's encapsulatedFrame: frame `index` of an encapsulated Pixel Data (PS3.5 A.4) of
    `frames` frames whose first item starts at `pos`, its fragments joined. The frame's fragments
    are the Basic Offset Table's when it is not empty; else all, for one frame; else one per frame
    when there are as many fragments as frames; else, for JPEG syntaxes, fragments up to one that
    ends in EOI. One pass over the item headers, every offset checked."""
    n = len(b)

    def item(at: int, what: str, last: bool) -> int | None:
        """The length of the item at `at`; None for the Sequence Delimitation Item, where `last` allows it."""
        if at + 8 > n:
            raise _corrupt("DICOM encapsulated pixel data is truncated: no Sequence Delimitation Item before the end "
                           f"of the file (byte {at})")
        group, element, length = struct.unpack_from("<HHI", b, at)
        if group == 0xFFFE and element == _SEQUENCE_DELIMITATION and last:
            return None
        if group != 0xFFFE or element != _ITEM:
            raise _corrupt(f"DICOM encapsulated pixel data holds ({_hex4(group)},{_hex4(element)}) at byte {at} where {what} belongs")
        if length == UNDEFINED_LENGTH or at + 8 + length > n:
            declared = "an undefined length" if length == UNDEFINED_LENGTH else f"{length} bytes"
            raise _corrupt(f"DICOM encapsulated pixel data is truncated: the item at byte {at} declares {declared}, "
                           f"{n - at - 8} are left")
        return length

    table = item(pos, "the Basic Offset Table item", False)
    if table not in (0, 4 * frames):
        has = "one frame" if frames == 1 else f"{frames} frames"
        raise _corrupt(f"DICOM Basic Offset Table is {table} bytes, though the file has {has} (0 or {4 * frames} bytes)")
    offsets = struct.unpack_from(f"<{frames}I", b, pos + 8) if table else ()
    if table:
        if offsets[0] != 0:
            raise _corrupt(f"DICOM Basic Offset Table puts frame 1 at byte {offsets[0]} of the fragments; it starts at 0")
        for k in range(1, frames):
            if offsets[k] <= offsets[k - 1]:
                raise _corrupt(f"DICOM Basic Offset Table is out of order: frame {k + 1} at byte {offsets[k]} of the "
                               f"fragments, frame {k} at {offsets[k - 1]}")
    first = pos + 8 + table
    by_table, by_count, by_eoi = _Span(), _Span(), _Span()
    fragments = 0
    ended = False
    at = first
    while (length := item(at, "a fragment item", True)) is not None:
        fragments += 1
        if length == 0 and frames > 1:
            raise _corrupt(f"DICOM encapsulated pixel data's fragment {fragments} (the item at byte {at}) is empty, "
                           f"in a file of {frames} frames")
        nxt = at + 8 + length
        if table:
            rel = at - first
            while by_table.frame + 1 < frames and rel >= offsets[by_table.frame + 1]:
                if rel > offsets[by_table.frame + 1]:
                    raise _corrupt(f"DICOM Basic Offset Table puts frame {by_table.frame + 2} at byte "
                                   f"{offsets[by_table.frame + 1]} of the fragments, where no fragment item starts")
                by_table.frame += 1
        by_table.see(index, at, nxt)
        by_count.frame = fragments - 1
        by_count.see(index, at, nxt)
        by_eoi.see(index, at, nxt)
        ended = jpeg and _ends_with_eoi(b[at + 8:nxt])
        if ended:
            by_eoi.frame += 1
        at = nxt
    if fragments == 0:
        raise _corrupt("DICOM encapsulated pixel data has no fragment: the frame is missing")
    span = by_table
    if table:
        if by_table.frame != frames - 1:
            raise _corrupt(f"DICOM Basic Offset Table puts frame {by_table.frame + 2} at byte {offsets[by_table.frame + 1]} "
                           f"of the fragments, past their {at - first} bytes")
    elif frames > 1:
        if fragments == frames:
            span = by_count
        elif not jpeg:
            raise _corrupt(f"DICOM encapsulated pixel data has {fragments} fragments for {frames} frames and no Basic "
                           "Offset Table; RLE puts each frame in one fragment")
        elif by_eoi.frame != frames or not ended:
            streams = "stream" if by_eoi.frame == 1 else "streams"
            raise _corrupt(f"DICOM encapsulated pixel data has {fragments} fragments for {frames} frames and no Basic "
                           f"Offset Table, and its fragments end {by_eoi.frame} JPEG {streams} (EOI)"
                           f"{'' if ended else ', then more fragments'}")
        else:
            span = by_eoi
    parts = []
    p = span.start
    while p < span.end:
        length = struct.unpack_from("<I", b, p + 4)[0]
        parts.append(b[p + 8:p + 8 + length])
        p += 8 + length
    return b"".join(parts)


def _rle_segment(src: bytes, out: bytearray, start: int, stride: int, n: int, which: str) -> None:
    """One RLE segment (PS3.5 G.3.2, PackBits): header byte h < 128 copies the next h + 1 bytes,
    h > 128 repeats the next byte 257 - h times, 128 does nothing. Writes exactly `n` bytes to
    out[start::stride]; bytes left after the n-th (an encoder's padding) are not read."""
    i = o = 0
    size = len(src)
    while o < n:
        if i >= size:
            raise _corrupt(f"DICOM {which} stops short: it decodes to {o} bytes of the {n} the image needs")
        h = src[i]
        i += 1
        if h == 128:
            continue
        run, reads = (h + 1, h + 1) if h < 128 else (257 - h, 1)
        if i + reads > size:
            raise _corrupt(f"DICOM {which} runs past its end: the run at byte {i - 1} needs {reads} byte(s), {size - i} are left")
        if o + run > n:
            raise _corrupt(f"DICOM {which} writes past the image: the run at byte {i - 1} writes {run} bytes at {o} of {n}")
        at = start + o * stride
        out[at:at + run * stride:stride] = src[i:i + run] if h < 128 else bytes([src[i]]) * run
        i += reads
        o += run


def _rle_frame(a: _Attributes, f: bytes) -> bytes:
    """An RLE Lossless frame (PS3.5 G.2) -> the samples as an uncompressed file stores them,
    planar configuration 1: the 64-byte header (the number of segments, then 15 offsets), then one
    segment per byte of each sample, the samples' planes in order, each sample's most significant
    byte first, whatever Planar Configuration says (segments are planes by definition, G.2)."""
    if len(f) < 64:
        raise _corrupt(f"DICOM RLE frame is {len(f)} bytes, shorter than its 64-byte header")
    count = struct.unpack_from("<I", f, 0)[0]
    nbytes = a.bits_allocated // 8
    need = a.samples * nbytes
    if count < 1 or count > 15:
        raise _corrupt(f"DICOM RLE header declares {count} segment(s); it holds 1 to 15")
    if count != need:
        raise _corrupt(f"DICOM RLE header declares {count} segment(s); {a.samples} sample(s) of {a.bits_allocated} bits need {need}")
    offsets = struct.unpack_from(f"<{count}I", f, 4)
    if offsets[0] != 64:
        raise _corrupt(f"DICOM RLE segment 1 starts at byte {offsets[0]}; it follows the 64-byte header, at 64")
    for k in range(1, count):
        if offsets[k] <= offsets[k - 1]:
            raise _corrupt(f"DICOM RLE segment offsets are out of order: segment {k + 1} at byte {offsets[k]}, "
                           f"segment {k} at {offsets[k - 1]}")
        if offsets[k] >= len(f):
            raise _corrupt(f"DICOM RLE segment {k + 1} starts at byte {offsets[k]}, past the frame's {len(f)} bytes")
    n = a.rows * a.columns
    raw = bytearray(n * need)
    for k in range(count):
        # little endian, as the uncompressed path reads it: the most significant byte goes last
        start = (k // nbytes) * n * nbytes + (nbytes - 1 - k % nbytes)
        end = offsets[k + 1] if k + 1 < count else len(f)
        _rle_segment(f[offsets[k]:end], raw, start, nbytes, n, f"RLE segment {k + 1} of {count}")
    return bytes(raw)


def _is_sof(m: int) -> bool:
    return 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC)


#: image.ts's UNDECODABLE_SOF: the coding processes mozjpeg cannot decode, refused whatever PIL can.
_UNDECODABLE_SOF = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
                    **{m: "arithmetic-coded" for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)}}


def _jpeg_header(b: bytes) -> tuple[int, int, int]:
    """image.ts's jpegHeader: the marker segments and entropy-coded data walked up to EOI, with its
    refusals -> (width, height, components) of the last frame header."""
    n = len(b)
    pos = 2
    header = None
    scans = 0

    def truncated() -> DicomError:
        return _corrupt(f"JPEG is truncated at byte {n} (no end-of-image marker)")

    while pos < n:
        if b[pos] != 0xFF:
            raise _corrupt(f"JPEG is corrupt: expected a marker at byte {pos}")
        while pos < n and b[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise truncated()
        m = b[pos]
        pos += 1
        if m == 0xD9:
            if header is None or scans == 0:
                raise _corrupt("JPEG ends before any image data")
            return header
        if m == 0x01 or 0xD0 <= m <= 0xD7:  # standalone markers
            continue
        if pos + 2 > n:
            raise truncated()
        length = (b[pos] << 8) | b[pos + 1]
        if length < 2:
            raise _corrupt(f"JPEG is corrupt: segment length {length} at byte {pos}")
        if pos + length > n:
            raise truncated()
        if _is_sof(m):
            if length < 8:
                raise _corrupt("JPEG frame header is too short")
            if b[pos + 2] != 8:
                raise _unsupported(f"JPEG with {b[pos + 2]}-bit samples is not supported (8-bit only)")
            if m in _UNDECODABLE_SOF:
                raise _unsupported(f"{_UNDECODABLE_SOF[m]} JPEG (SOF{m - 0xC0}) is not supported "
                                   "(Huffman-coded baseline, extended or progressive only)")
            header = ((b[pos + 5] << 8) | b[pos + 6], (b[pos + 3] << 8) | b[pos + 4], b[pos + 7])
            if header[2] not in (1, 3):
                raise _unsupported(f"JPEG with {header[2]} colour components is not supported (grey or YCbCr only)")
        pos += length
        if m == 0xDA:
            if header is None:
                raise _corrupt("JPEG has image data before its frame header")
            scans += 1
            # entropy-coded data runs to the next marker that is neither a stuffed 0xff00 nor a restart
            while True:
                j = b.find(b"\xff", pos, n - 1)
                if j < 0:
                    raise truncated()
                nxt = b[j + 1]
                if nxt != 0x00 and not 0xD0 <= nxt <= 0xD7 and nxt != 0xFF:
                    pos = j
                    break
                pos = j + 1
    raise truncated()


def _decode_jpeg_file(b: bytes) -> tuple[int, int, int, bytes]:
    """image.ts's decodeJpegFile with PIL as the codec: walked, its size checked, decoded ->
    (width, height, channels, interleaved samples)."""
    width, height, components = _jpeg_header(b)
    _check_size(width, height)
    want = "L" if components == 1 else "RGB"
    try:
        with Image.open(io.BytesIO(b)) as im:
            im.load()
            px = np.asarray(im if im.mode == want else im.convert(want), dtype=np.uint8)
    except Exception as e:  # what the codec says of data that passed the walk, as image.ts's `guarded`
        raise _corrupt(f"JPEG could not be decoded: {e}") from e
    if px.shape[1] != width or px.shape[0] != height:
        raise _corrupt(f"JPEG decoded to {px.shape[1]}x{px.shape[0]}, its header says {width}x{height}")
    return width, height, 1 if components == 1 else 3, px.tobytes()


def _jpeg_frame_header(f: bytes) -> tuple[int, int] | None:
    """dicom.ts's jpegFrameHeader: a JPEG's first frame header (SOFn) from the marker segments before
    it -> (marker, sample precision); None when a scan or the end comes first."""
    pos = 2
    while pos + 4 < len(f) and f[pos] == 0xFF:
        m = f[pos + 1]
        if m in (0xDA, 0xD9):
            return None
        if m == 0xFF:  # a fill byte
            pos += 1
        elif m == 0x01 or 0xD0 <= m <= 0xD7:  # standalone markers
            pos += 2
        elif _is_sof(m):
            return m, f[pos + 4]
        else:
            pos += 2 + ((f[pos + 2] << 8) | f[pos + 3])
    return None


def _jpeg_frame(a: _Attributes, f: bytes) -> bytes:
    """JPEG Baseline, and JPEG Extended with 8-bit samples (SOF0 or SOF1): the frame through the JPEG
    path, which must agree with the header; 12-bit JPEG Extended is a 415."""
    what = f"DICOM {a.syntax.name} frame"
    if not f.startswith(_JPEG):
        start = " ".join(f"{x:02x}" for x in f[:4]) or "nothing"
        raise _corrupt(f"{what} is not a JPEG (starts with {start})")
    sof = _jpeg_frame_header(f) if a.syntax.extended else None
    if sof and sof[1] != 8:
        raise _unsupported(f"DICOM JPEG Extended with {sof[1]}-bit samples is not supported: decompress it (dcmdjpeg in.dcm "
                           "out.dcm) or send it in JPEG Lossless; 8-bit JPEG Extended is read")
    if sof and sof[0] > 0xC1:
        raise _corrupt(f"{what} is coded as SOF{sof[0] - 0xC0}; JPEG Extended is SOF0 or SOF1 (sequential, Huffman)")
    if sof and a.bits_allocated != 8:
        raise _corrupt(f"{what} holds 8-bit samples; the header says {a.bits_allocated} bits allocated")
    try:
        width, height, channels, raw = _decode_jpeg_file(f)
    except DicomError as e:
        raise DicomError(e.status, e.code, f"{what}: {e}") from e
    if width != a.columns or height != a.rows:
        raise _corrupt(f"{what} is {width}x{height}; the header says {a.columns}x{a.rows}")
    if channels != a.samples:
        raise _corrupt(f"{what} has {channels} component(s); the header says {a.samples} sample(s) per pixel")
    return raw


def decode(data: bytes, frame: int | None = None) -> np.ndarray:
    """A DICOM file's bytes -> (rows, columns, 1 or 3) uint8, as the service's
    `decodeImage(bytes, 'application/dicom', limits, {frame})` decodes them (`frame`, 0-based:
    required for a multi-frame file, 0 or None otherwise); raises DicomError as it refuses them."""
    if frame is not None and not (isinstance(frame, int) and not isinstance(frame, bool) and 0 <= frame <= MAX_FRAME):
        raise DicomError(400, "invalid_field", f"frame must be a non-negative integer, got {frame}")
    data = bytes(data)
    check_bytes(data)
    sniffed = "PNG" if data.startswith(_PNG) else "JPEG" if data.startswith(_JPEG) else None
    if sniffed:
        raise _unsupported(f"content type application/dicom does not match the bytes, which are {sniffed}")
    if not is_dicom(data):
        raise _unsupported('not a DICOM Part 10 file: no "DICM" after its 128-byte preamble')
    data = _inflated(data)
    a = _attributes(_Walker(data, 0 if frame is None else frame).walk(), len(data), frame)
    # the limits before anything the size of the image is read, allocated or decompressed
    _check_size(a.columns, a.rows)
    def encapsulated() -> bytes:
        return _encapsulated_frame(data, a.pixel_offset, a.frames, a.frame, a.syntax.pixels != "rle")

    if a.syntax.pixels == "rle":
        return _pixels(a, _rle_frame(a, encapsulated()), 1)
    if a.syntax.pixels == "jpeg":
        # the decoder's output is interleaved, whatever Planar Configuration says
        return _pixels(a, _jpeg_frame(a, encapsulated()), 0)
    if a.syntax.pixels == "jpeg-lossless":
        # imported here: jpeg_lossless.py raises this module's DicomError
        from .jpeg_lossless import decode_jpeg_lossless
        # interleaved too, whatever Planar Configuration says
        raw = decode_jpeg_lossless(encapsulated(), a.rows, a.columns, a.samples, a.bits_allocated,
                                   a.bits_stored, a.signed, a.syntax.name, a.syntax.sv1)
        return _pixels(a, raw, 0)
    if a.syntax.pixels == "jpeg-ls":
        # imported here: dicom_codecs.py raises this module's DicomError
        from .dicom_codecs import Target, decode_jpeg_ls
        # interleaved or planar as the scan is (ILV), whatever Planar Configuration says
        raw, planar = decode_jpeg_ls(encapsulated(), Target(a.rows, a.columns, a.samples, a.bits_allocated, a.bits_stored,
                                                            a.signed, a.syntax.name))
        return _pixels(a, raw, planar)
    if a.syntax.pixels == "jpeg2000":
        from .dicom_codecs import Target, decode_jpeg2000
        # interleaved, whatever Planar Configuration says
        raw, planar = decode_jpeg2000(encapsulated(), Target(a.rows, a.columns, a.samples, a.bits_allocated, a.bits_stored,
                                                            a.signed, a.syntax.name))
        return _pixels(a, raw, planar)
    # frames follow each other, each exactly `need` bytes: all of them must be there, not only the one read
    need = a.rows * a.columns * a.samples * (a.bits_allocated // 8)
    present = min(a.pixel_length, len(data) - a.pixel_offset)
    if present < need * a.frames:
        of = f"{a.frames} frames of " if a.frames > 1 else ""
        raise _corrupt(f"DICOM is truncated: {of}{a.columns}x{a.rows} pixels need {need * a.frames} bytes of pixel data, "
                       f"{present} are present")
    at = a.pixel_offset + a.frame * need
    return _pixels(a, data[at:at + need], a.planar)


def decode_rgb(data: bytes) -> np.ndarray:
    """A DICOM file -> (H, W, 3) uint8 for preprocess.py: grey replicated, as for a grey PNG or JPEG."""
    px = decode(data)
    return np.repeat(px, 3, axis=2) if px.shape[2] == 1 else px
