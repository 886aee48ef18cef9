"""DICOM's JPEG-LS and JPEG 2000 frames: the Python mirror of functions/encode/dicom-codecs.ts,
called by dicom.py. The codestream's own header (JPEG-LS SOF55, JPEG 2000 SIZ) is read here and
must agree with the DICOM header (same checks, same order, same messages) before a codec sees the
frame, and a JPEG 2000 codestream must run whole to its EOC, its tile-parts in order; then the
frame goes to a maintained codec: CharLS (Debian's libcharls.so.2, through its C API by ctypes;
the service runs CharLS 2.4 too, built to WebAssembly) and OpenJPEG (Pillow's, `Image.open` on the
codestream through its EOC). The samples come out as an uncompressed file stores them.

A codec's own failure is refused as the service refuses it, 422 `DICOM <syntax> frame could not
be decoded: ` followed by the codec's words, which are CharLS's own on both sides but OpenJPEG's on
the service and Pillow's here (test/python/test_dicom.py compares such messages up to the colon).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .dicom import DicomError

#: Far above a real tiling (a 4096 x 4096 image in 64 x 64 tiles), far below what a codec's per-tile state costs.
MAX_TILES = 4096
#: The largest XTsiz or YTsiz read: dicom-codecs.ts's MAX_TILE_SIDE.
MAX_TILE_SIDE = 0x7FFFFFFF


@dataclass(frozen=True)
class Target:
    """What the DICOM header says a frame holds; `syntax` names it in messages."""
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    syntax: str


@dataclass(frozen=True)
class Header:
    """What a codestream header declares; `signed` is None where the format does not say (JPEG-LS),
    and `tiles` (the tile count, for the walk of the tile-parts) is JPEG 2000's alone."""
    width: int
    height: int
    components: int
    precision: int
    signed: bool | None = None
    tiles: int | None = None


def _corrupt(t: Target, message: str) -> DicomError:
    return DicomError(422, "corrupt_image", f"DICOM {t.syntax} frame {message}")


def _start_hex(f: bytes) -> str:
    return " ".join(f"{x:02x}" for x in f[:4]) or "nothing"


def _be16(f: bytes, i: int) -> int:
    return (f[i] << 8) | f[i + 1]


def _be32(f: bytes, i: int) -> int:
    return int.from_bytes(f[i:i + 4], "big")


def _segment_length(f: bytes, pos: int, t: Target) -> int:
    """dicom-codecs.ts's segmentLength: the length of the marker segment at `pos`, which must end inside `f`."""
    if pos + 4 > len(f):
        raise _corrupt(t, f"is truncated: the segment at byte {pos} runs past its end")
    length = _be16(f, pos + 2)
    if length < 2:
        raise _corrupt(t, f"is corrupt: segment length {length} at byte {pos + 2}")
    if pos + 2 + length > len(f):
        raise _corrupt(t, f"is truncated: the segment at byte {pos} runs past its end")
    return length


def jpeg_ls_header(f: bytes, t: Target) -> Header:
    """dicom-codecs.ts's jpegLsHeader: the marker segments from SOI up to SOF55 (ff f7)."""
    if not (len(f) >= 2 and f[0] == 0xFF and f[1] == 0xD8):
        raise _corrupt(t, f"is not a JPEG-LS stream (starts with {_start_hex(f)})")
    pos = 2
    while True:
        if pos + 4 > len(f):
            raise _corrupt(t, f"is truncated: no frame header (SOF55) before its end (byte {len(f)})")
        if f[pos] != 0xFF:
            raise _corrupt(t, f"is corrupt: a marker belongs at byte {pos}, which is {f[pos]:02x}")
        m = f[pos + 1]
        if m in (0xDA, 0xD9):
            raise _corrupt(t, f"has no frame header (SOF55) before marker ff{m:02x} at byte {pos}")
        length = _segment_length(f, pos, t)
        if m == 0xF7:
            count = f[pos + 9] if length >= 8 else 0
            if length < 8 or length != 8 + 3 * count:
                raise _corrupt(t, f"has a frame header (SOF55) of {length} bytes; {count} component(s) need {8 + 3 * count}")
            return Header(width=_be16(f, pos + 7), height=_be16(f, pos + 5), components=count, precision=f[pos + 4])
        if 0xC0 <= m <= 0xCF and m not in (0xC4, 0xC8, 0xCC):
            raise _corrupt(t, f"has a JPEG frame header (ff{m:02x}), not JPEG-LS's SOF55")
        pos += 2 + length


def j2k_header(f: bytes, t: Target) -> Header:
    """dicom-codecs.ts's j2kHeader: SOC (ff 4f), then SIZ (ff 51)."""
    if not (len(f) >= 4 and f[:4] == b"\xff\x4f\xff\x51"):
        raise _corrupt(t, f"is not a JPEG 2000 codestream: no SOC and SIZ markers (ff 4f ff 51) at its start (starts with {_start_hex(f)})")
    if len(f) < 42:
        raise _corrupt(t, f"is truncated: its SIZ segment runs past its end (byte {len(f)})")
    length = _be16(f, 4)
    count = _be16(f, 40)
    if length != 38 + 3 * count:
        raise _corrupt(t, f"has a SIZ segment of {length} bytes; {count} component(s) need {38 + 3 * count}")
    if 4 + length > len(f):
        raise _corrupt(t, f"is truncated: its SIZ segment runs past its end (byte {len(f)})")
    x, y, x0, y0, tile_x, tile_y, tile_x0, tile_y0 = (_be32(f, i) for i in (8, 12, 16, 20, 24, 28, 32, 36))
    if tile_x == 0 or tile_y == 0:
        raise _corrupt(t, f"declares tiles of {tile_x}x{tile_y}")
    if tile_x > MAX_TILE_SIDE or tile_y > MAX_TILE_SIDE:  # Debian's OpenJPEG refuses them, the service's reads them
        raise _corrupt(t, f"declares tiles of {tile_x}x{tile_y}; a side may be at most {MAX_TILE_SIDE}")
    tiles = math.ceil(max(0, x - tile_x0) / tile_x) * math.ceil(max(0, y - tile_y0) / tile_y)
    if tiles > MAX_TILES:
        raise _corrupt(t, f"declares {tiles} tiles of {tile_x}x{tile_y}; at most {MAX_TILES}")
    ssiz = f[42]
    for c in range(count):
        at = 42 + 3 * c
        if f[at] != ssiz:
            raise _corrupt(t, f"component {c + 1} has Ssiz {f[at]}, component 1 {ssiz}: their precision and sign differ")
        if f[at + 1] != 1 or f[at + 2] != 1:
            raise _corrupt(t, f"subsamples component {c + 1} at {f[at + 1]}x{f[at + 2]}; only 1x1 is supported")
    return Header(width=x - x0, height=y - y0, components=count, precision=(ssiz & 0x7F) + 1, signed=(ssiz & 0x80) != 0, tiles=tiles)


def j2k_codestream_length(f: bytes, tiles: int, t: Target) -> int:
    """dicom-codecs.ts's j2kCodestreamLength: the main header's marker segments after SIZ, then the
    tile-parts chained by each SOT's Psot (0: the last, running to the EOC), to the EOC -> the
    codestream's length through its EOC, all Pillow is given; a codestream cut short, or a
    tile-part out of its tile's order (a tile past `tiles`, a TPsot other than the count of its
    tile's earlier tile-parts, one at or past the TNsot its tile last declared), is refused here
    as on the service, not left to each OpenJPEG's own leniency."""
    pos = 4 + _be16(f, 4)
    while True:
        if pos + 2 > len(f):
            raise _corrupt(t, f"is truncated: no tile-part (SOT, ff 90) before its end (byte {len(f)})")
        if f[pos] != 0xFF:
            raise _corrupt(t, f"is corrupt: a marker belongs at byte {pos}, which is {f[pos]:02x}")
        if f[pos + 1] == 0x90:
            break
        if f[pos + 1] == 0xD9:
            raise _corrupt(t, f"has no tile-part (SOT, ff 90) before its EOC (ff d9) at byte {pos}")
        pos += 2 + _segment_length(f, pos, t)
    parts, declared = [0] * tiles, [0] * tiles  # each tile's tile-parts so far, and the TNsot it last declared
    while True:
        if pos + 12 > len(f):
            raise _corrupt(t, f"is truncated: its tile-part at byte {pos} runs past its end (byte {len(f)})")
        lsot = _be16(f, pos + 2)
        if lsot != 10:
            raise _corrupt(t, f"has a SOT segment of {lsot} bytes at byte {pos}; SOT takes 10")
        tile, part, total = _be16(f, pos + 4), f[pos + 10], f[pos + 11]
        if tile >= tiles:
            raise _corrupt(t, f"has a tile-part of tile {tile} at byte {pos}; its SIZ declares {tiles} tile(s)")
        if part != parts[tile]:
            raise _corrupt(t, f"has tile-part {part} of tile {tile} at byte {pos}; the tile's next is tile-part {parts[tile]}")
        for n in (declared[tile], total):
            if n != 0 and part >= n:
                raise _corrupt(t, f"has tile-part {part} of tile {tile} at byte {pos}; its tile has only {n} (TNsot)")
        parts[tile] += 1
        if total != 0:
            declared[tile] = total
        psot = _be32(f, pos + 6)
        if psot == 0:  # the first ff d9 is the EOC: a tile's data never holds one
            eoc = f.find(b"\xff\xd9", pos + 12)
            if eoc < 0:
                raise _corrupt(t, f"is truncated: no EOC (ff d9) after its tile-part at byte {pos}")
            return eoc + 2
        if psot < 12:
            raise _corrupt(t, f"has a tile-part of {psot} bytes at byte {pos}; its SOT segment alone takes 12")
        nxt = pos + psot
        if nxt > len(f):
            raise _corrupt(t, f"is truncated: its tile-part at byte {pos} runs past its end (byte {len(f)})")
        if nxt + 2 > len(f):
            raise _corrupt(t, f"is truncated: no EOC (ff d9) after its tile-part at byte {pos}")
        if f[nxt] != 0xFF or f[nxt + 1] not in (0x90, 0xD9):
            raise _corrupt(t, f"is corrupt: {f[nxt]:02x} {f[nxt + 1]:02x} at byte {nxt}, after the tile-part at byte {pos}, "
                              "where SOT (ff 90) or EOC (ff d9) belongs")
        if f[nxt + 1] == 0xD9:
            return nxt + 2
        pos = nxt


def check_codestream(h: Header, t: Target) -> None:
    """dicom-codecs.ts's checkCodestream: the codestream header against the DICOM header."""
    if h.width != t.columns or h.height != t.rows:
        raise _corrupt(t, f"is {h.width}x{h.height}; the header says {t.columns}x{t.rows}")
    if h.components != t.samples:
        raise _corrupt(t, f"has {h.components} component(s); the header says {t.samples} sample(s) per pixel")
    if h.precision < 2 or h.precision > 16:
        raise _corrupt(t, f"has precision {h.precision}; 2 to 16 bits are read")
    if h.precision > t.bits_allocated:
        raise _corrupt(t, f"has precision {h.precision}; the header says {t.bits_allocated} bits allocated")
    if h.precision < t.bits_stored and t.signed:
        raise _corrupt(t, f"has precision {h.precision}, below the {t.bits_stored} bits stored of signed samples, "
                          "whose sign bit it would move")
    if h.signed is not None and h.signed != t.signed:
        raise _corrupt(t, f"has {'signed' if h.signed else 'unsigned'} samples; the header's Pixel Representation (0028,0103) "
                          f"says {'signed' if t.signed else 'unsigned'}")


def _widen(samples: bytes, nbytes: int, t: Target) -> bytes:
    """Samples of `nbytes` bytes each -> Bits Allocated bytes each, little endian."""
    if nbytes == t.bits_allocated // 8:
        return samples
    out = bytearray(len(samples) * 2)
    out[0::2] = samples
    return bytes(out)


# --- CharLS, through its C API ----------------------------------------------------------------

class _FrameInfo(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32),
                ("bits_per_sample", ctypes.c_int32), ("component_count", ctypes.c_int32)]


_charls: ctypes.CDLL | None = None


def _charls_library() -> ctypes.CDLL:
    """Debian's libcharls2 (scripts/install.sh), loaded on the first JPEG-LS frame."""
    global _charls
    if _charls is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("charls") or "libcharls.so.2")
        except OSError as e:
            raise RuntimeError("DICOM JPEG-LS needs CharLS: install libcharls2 (scripts/install.sh)") from e
        vp = ctypes.c_void_p
        lib.charls_jpegls_decoder_create.restype = vp
        lib.charls_jpegls_decoder_create.argtypes = []
        lib.charls_jpegls_decoder_destroy.argtypes = [vp]
        lib.charls_jpegls_decoder_destroy.restype = None
        lib.charls_jpegls_decoder_set_source_buffer.argtypes = [vp, ctypes.c_char_p, ctypes.c_size_t]
        lib.charls_jpegls_decoder_read_header.argtypes = [vp]
        lib.charls_jpegls_decoder_get_frame_info.argtypes = [vp, ctypes.POINTER(_FrameInfo)]
        lib.charls_jpegls_decoder_get_interleave_mode.argtypes = [vp, ctypes.POINTER(ctypes.c_int32)]
        lib.charls_jpegls_decoder_get_destination_size.argtypes = [vp, ctypes.c_uint32, ctypes.POINTER(ctypes.c_size_t)]
        lib.charls_jpegls_decoder_decode_to_buffer.argtypes = [vp, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32]
        lib.charls_get_error_message.restype = ctypes.c_char_p
        lib.charls_get_error_message.argtypes = [ctypes.c_int32]
        _charls = lib
    return _charls


class _CodecFailure(Exception):
    """The codec's own words, for the caller's 422."""


def decode_jpeg_ls(f: bytes, t: Target) -> tuple[bytes, int]:
    """A JPEG-LS frame -> (samples, planar): planes when the scan is not interleaved (ILV 0)."""
    h = jpeg_ls_header(f, t)
    check_codestream(h, t)
    lib = _charls_library()
    d = lib.charls_jpegls_decoder_create()
    if not d:
        raise MemoryError("CharLS could not create a decoder")
    try:
        def ok(code: int) -> None:
            if code != 0:
                raise _CodecFailure(lib.charls_get_error_message(code).decode("utf-8", "replace"))

        try:
            ok(lib.charls_jpegls_decoder_set_source_buffer(d, f, len(f)))
            ok(lib.charls_jpegls_decoder_read_header(d))
            info = _FrameInfo()
            ok(lib.charls_jpegls_decoder_get_frame_info(d, ctypes.byref(info)))
            if (info.width, info.height, info.component_count, info.bits_per_sample) != (h.width, h.height, h.components, h.precision):
                raise _CodecFailure(f"it decoded to {info.width}x{info.height}, {info.component_count} component(s) of "
                                    f"{info.bits_per_sample} bits, not what its header says")
            nbytes = 2 if h.precision > 8 else 1
            want = h.width * h.height * h.components * nbytes
            size = ctypes.c_size_t()
            ok(lib.charls_jpegls_decoder_get_destination_size(d, 0, ctypes.byref(size)))
            if size.value != want:
                raise _CodecFailure(f"it decoded to {size.value} bytes, not {want}")
            out = ctypes.create_string_buffer(want)
            ok(lib.charls_jpegls_decoder_decode_to_buffer(d, out, want, 0))
            mode = ctypes.c_int32()
            ok(lib.charls_jpegls_decoder_get_interleave_mode(d, ctypes.byref(mode)))
        except _CodecFailure as e:
            raise _corrupt(t, f"could not be decoded: {e}") from None
    finally:
        lib.charls_jpegls_decoder_destroy(d)
    return _widen(out.raw, nbytes, t), 1 if t.samples > 1 and mode.value == 0 else 0


# --- OpenJPEG, through Pillow -------------------------------------------------------------------

def decode_jpeg2000(f: bytes, t: Target) -> tuple[bytes, int]:
    """A JPEG 2000 codestream frame -> (samples, 0): interleaved. Pillow gives each sample offset
    by 2^(P-1) when signed and shifted left to fill its mode ("L": 8 bits, "I;16": 16), both of
    which are undone here, exactly: the lossless fixtures' twins (test/python/test_dicom.py) hold it
    to the bytes of the uncompressed files."""
    h = j2k_header(f, t)
    check_codestream(h, t)
    codestream = f[:j2k_codestream_length(f, h.tiles, t)]
    try:
        with Image.open(io.BytesIO(codestream), formats=["JPEG2000"]) as im:
            im.load()
            mode = im.mode
            px = np.asarray(im)
    except Exception as e:  # Pillow's own words for what OpenJPEG could not decode, as the service gives OpenJPEG's
        raise _corrupt(t, f"could not be decoded: {e}") from None
    container = {"L": 8, "RGB": 8, "I;16": 16}.get(mode)
    if container is None or px.shape[:2] != (h.height, h.width) or (px.shape[2] if px.ndim == 3 else 1) != h.components:
        raise _corrupt(t, f"could not be decoded: Pillow gave a {mode} image of shape {px.shape}, not what its header says")
    v = px.astype(np.int32) >> (container - h.precision)
    if h.signed:
        v -= 1 << (h.precision - 1)
    nbytes = 2 if h.precision > 8 else 1
    raw = (v & (0xFFFF if nbytes == 2 else 0xFF)).astype("<u2" if nbytes == 2 else np.uint8).tobytes()
    return _widen(raw, nbytes, t), 0
