"""JPEG Lossless (ITU T.81 Annex H: Huffman-coded, non-hierarchical, SOF3) frames of DICOM's
transfer syntaxes 1.2.840.10008.1.2.4.57 (any predictor 1-7) and .70 (predictor 1 only): the
Python mirror of functions/encode/jpeg-lossless.ts, step by step (same checks in the same order,
same messages), called by dicom.py. The frame in, the samples out as an uncompressed file stores
them (little endian, interleaved). Precision 2-16, point transform, restart intervals of whole
rows, any number of Huffman tables, 1x1 sampling.

The service decodes and undoes the prediction sample by sample; here the entropy decoding is a
loop over samples (a 16-bit lookup per difference) and the prediction is numpy where it can be
(predictors 1 and 2 are running sums, modulo 2^16 like the samples), a loop for 3-7. The first
fault in the service's order is the one named: a sample out of range before the place where the
entropy decoding failed wins over that failure, as it would have stopped the service first.
"""
from __future__ import annotations

import numpy as np

from .dicom import DicomError

_PROCESSES = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC5: "differential sequential (hierarchical)",
    0xC6: "differential progressive (hierarchical)", 0xC7: "differential lossless (hierarchical)",
    0xC9: "extended sequential, arithmetic-coded", 0xCA: "progressive, arithmetic-coded", 0xCB: "lossless, arithmetic-coded",
    0xCD: "differential sequential, arithmetic-coded (hierarchical)",
    0xCE: "differential progressive, arithmetic-coded (hierarchical)",
    0xCF: "differential lossless, arithmetic-coded (hierarchical)",
}


def _corrupt(message: str) -> DicomError:
    return DicomError(422, "corrupt_image", f"DICOM JPEG Lossless frame {message}")


def _check_huffman(counts: bytes, table_id: int) -> None:
    """The codes fit (T.81 C.2); as in libjpeg, reaching the all-ones code makes the table bad."""
    code = 0
    for length in range(1, 17):
        code += counts[length - 1]
        if counts[length - 1] > 0 and code >= 1 << length:
            raise _corrupt(f"has a bad Huffman table {table_id}: more codes of {length} bits than fit")
        code *= 2


def _huffman_lookup(table: dict) -> list[int]:
    """The table as a 65536-entry lookup on the next 16 bits: (code length << 8) | value, 0 where
    no code matches; made when a scan uses the table."""
    if "lookup" not in table:
        lookup = np.zeros(65536, dtype=np.int32)
        code = k = 0
        for length in range(1, 17):
            for _ in range(table["counts"][length - 1]):
                lookup[code << (16 - length):(code + 1) << (16 - length)] = (length << 8) | table["values"][k]
                k += 1
                code += 1
            code <<= 1
        table["lookup"] = lookup.tolist()
    return table["lookup"]


def _at_marker(f: bytes, i: int) -> bool:
    """Whether entropy-coded data ends at byte i: a marker (0xFF then anything but 0x00) or a lone 0xFF at the end."""
    return f[i] == 0xFF and (i + 1 >= len(f) or f[i + 1] != 0)


def _segment_end(f: bytes, pos: int) -> int:
    """Where the entropy-coded data from `pos` ends: the next marker, or the frame's end."""
    n = len(f)
    i = f.find(b"\xff", pos)
    while i >= 0 and not _at_marker(f, i):
        i = f.find(b"\xff", i + 2)
    return n if i < 0 else i


def decode_jpeg_lossless(f: bytes, rows: int, columns: int, samples: int, bits_allocated: int, bits_stored: int,
                         signed: bool, syntax: str, sv1: bool) -> bytes:
    """A JPEG Lossless frame -> rows x columns x samples, each in bits_allocated / 8 bytes, little
    endian, interleaved; raises DicomError (422) naming the first fault."""
    n = len(f)
    if not (n >= 2 and f[0] == 0xFF and f[1] == 0xD8):
        start = " ".join(f"{x:02x}" for x in f[:4]) or "nothing"
        raise _corrupt(f"is not a JPEG (starts with {start})")
    tables: dict[int, dict] = {}
    frame = None  # (precision, component ids)
    restart = 0
    out = None
    decoded: set[int] = set()
    pos = 2

    def truncated() -> DicomError:
        return _corrupt(f"is truncated: no end-of-image marker before its end (byte {n})")

    while True:
        if pos >= n:
            raise truncated()
        if f[pos] != 0xFF:
            raise _corrupt(f"is corrupt: a marker belongs at byte {pos}, which is {f[pos]:02x}")
        at = pos
        while pos < n and f[pos] == 0xFF:
            pos += 1
        if pos >= n:
            raise truncated()
        m = f[pos]
        pos += 1
        if m == 0xD9:
            if frame is None:
                raise _corrupt("ends (EOI) before its frame header (SOF3)")
            missing = [i for i in frame[1] if i not in decoded]
            if missing or out is None:
                raise _corrupt(f"ends (EOI) before component(s) {', '.join(map(str, missing))} are decoded (no scan for them)")
            return out.tobytes()
        # standalone markers (T.81 B.1.1.3); a restart marker between scans carries nothing
        if m == 0x01 or 0xD0 <= m <= 0xD7:
            continue
        if m in (0x00, 0xD8):
            raise _corrupt(f"is corrupt: marker ff{m:02x} at byte {at}")
        if pos + 2 > n:
            raise truncated()
        length = (f[pos] << 8) | f[pos + 1]
        if length < 2:
            raise _corrupt(f"is corrupt: segment length {length} at byte {pos}")
        end = pos + length
        if end > n:
            raise truncated()
        p = pos + 2
        pos = end
        if m == 0xC3:
            if frame is not None:
                raise _corrupt(f"has a second frame header (SOF3) at byte {at}")
            if length < 8:
                raise _corrupt(f"frame header (SOF3) is {length} bytes, too short")
            precision = f[p]
            height = (f[p + 1] << 8) | f[p + 2]
            width = (f[p + 3] << 8) | f[p + 4]
            count = f[p + 5]
            if length != 8 + 3 * count:
                raise _corrupt(f"frame header (SOF3) is {length} bytes; {count} component(s) need {8 + 3 * count}")
            if precision < 2 or precision > 16:
                raise _corrupt(f"has precision {precision}; lossless JPEG is 2 to 16 bits")
            if width != columns or height != rows:
                raise _corrupt(f"is {width}x{height}; the header says {columns}x{rows}")
            if count != samples:
                raise _corrupt(f"has {count} component(s); the header says {samples} sample(s) per pixel")
            # above Bits Stored is common (DCMTK writes 16 for 12 of 16 bits): masked as uncompressed samples
            # are; below it, unsigned samples are the same numbers, but a signed one's sign would sit at bit P - 1
            if precision > bits_allocated:
                raise _corrupt(f"has precision {precision}; the header says {bits_allocated} bits allocated")
            if precision < bits_stored and signed:
                raise _corrupt(f"has precision {precision}, below the {bits_stored} bits stored of signed samples, "
                               "whose sign bit it would move")
            ids: list[int] = []
            for c in range(count):
                cid, sampling = f[p + 6 + 3 * c], f[p + 7 + 3 * c]
                if cid in ids:
                    raise _corrupt(f"names component {cid} twice in its frame header")
                if sampling != 0x11:
                    raise _corrupt(f"samples component {cid} at {sampling >> 4}x{sampling & 15}; only 1x1 is supported")
                ids.append(cid)
            frame = (precision, ids)
        elif m in _PROCESSES:
            raise _corrupt(f"is {_PROCESSES[m]} (SOF{m - 0xC0}), not lossless with Huffman coding (SOF3), "
                           f"though the transfer syntax is {syntax}")
        elif m in (0xDE, 0xDF):
            raise _corrupt(f"is hierarchical ({'DHP' if m == 0xDE else 'EXP'} marker), which {syntax} is not")
        elif m == 0xC4:
            q = p
            while q < end:
                cls, tid = f[q] >> 4, f[q] & 15
                if cls > 1 or tid > 3:
                    raise _corrupt(f"has a bad Huffman table: class {cls}, id {tid} (class 0 or 1, id 0 to 3)")
                if q + 17 > end:
                    raise _corrupt(f"has a bad Huffman table {tid}: its 16 code counts run past its segment")
                counts = f[q + 1:q + 17]
                total = sum(counts)
                if q + 17 + total > end:
                    raise _corrupt(f"has a bad Huffman table {tid}: {total} values run past its segment")
                _check_huffman(counts, tid)
                # AC tables (class 1) have no use in a lossless scan: checked, not kept
                if cls == 0:
                    tables[tid] = {"counts": counts, "values": f[q + 17:q + 17 + total]}
                q += 17 + total
        elif m == 0xDD:
            if length != 4:
                raise _corrupt(f"restart interval segment (DRI) is {length} bytes; it is 4")
            restart = (f[p] << 8) | f[p + 1]
        elif m == 0xDA:
            if frame is None:
                raise _corrupt("has a scan (SOS) before its frame header (SOF3)")
            precision, ids = frame
            ns = f[p]
            if ns < 1 or ns > 4 or length != 6 + 2 * ns:
                raise _corrupt(f"scan header (SOS) is {length} bytes for {ns} component(s)")
            components: list[int] = []
            lookups: list[list[int]] = []
            for s in range(ns):
                cid, table = f[p + 1 + 2 * s], f[p + 2 + 2 * s] >> 4
                if cid not in ids:
                    raise _corrupt(f"scan names component {cid}, which its frame header does not have")
                index = ids.index(cid)
                if cid in decoded or index in components:
                    raise _corrupt(f"scan decodes component {cid} a second time")
                if table not in tables:
                    raise _corrupt(f"scan uses Huffman table {table} for component {cid}, which is not defined")
                components.append(index)
                lookups.append(_huffman_lookup(tables[table]))
            predictor = f[p + 1 + 2 * ns]
            se = f[p + 2 + 2 * ns]
            ah, pt = f[p + 3 + 2 * ns] >> 4, f[p + 3 + 2 * ns] & 15
            if predictor < 1 or predictor > 7:
                raise _corrupt(f"scan has predictor {predictor}; lossless JPEG has 1 to 7")
            if sv1 and predictor != 1:
                raise _corrupt(f"scan has predictor {predictor}; {syntax} allows predictor 1 only")
            if se != 0 or ah != 0:
                raise _corrupt(f"scan header has Se {se} and Ah {ah}; lossless JPEG has 0 and 0")
            if pt >= precision:
                raise _corrupt(f"scan has point transform {pt}, not below the precision {precision}")
            if restart % columns != 0:
                raise _corrupt(f"has a restart interval of {restart} samples, not a whole number of rows of {columns}")
            decoded.update(ids[i] for i in components)
            if out is None:
                out = np.zeros((rows, columns, samples), dtype="<u2" if bits_allocated == 16 else np.uint8)
            pos = _scan(f, pos, out, rows, columns, samples, precision, ids, components, lookups, predictor, pt, restart)
        # APPn, COM, DQT, DNL and the rest: skipped by their length


def _scan(f: bytes, pos: int, out: np.ndarray, rows: int, columns: int, samples: int, precision: int, ids: list[int],
          components: list[int], lookups: list[list[int]], predictor: int, pt: int, restart: int) -> int:
    """One scan's entropy-coded data from `pos` into `out`; returns where the marker after it starts."""
    ns = len(components)
    rows_per_interval = rows if restart == 0 else restart // columns
    diffs = np.zeros((rows, columns, ns), dtype=np.int64)

    def where(k: int) -> str:
        r, rest = divmod(k, columns * ns)
        c, i = divmod(rest, ns)
        return f"row {r}, column {c}" + (f" of component {ids[components[i]]}" if samples > 1 else "")

    failure = None  # (sample index in decoding order, the error)
    r0 = 0
    while r0 < rows and failure is None:
        if r0 > 0:
            expected = (r0 // rows_per_interval - 1) & 7
            q = pos
            while q < len(f) and f[q] == 0xFF:
                q += 1
            if q >= len(f):
                failure = (r0 * columns * ns, _corrupt(f"is truncated: its data stops before row {r0}'s restart marker RST{expected}"))
                break
            if f[q] != 0xD0 + expected:
                found = f"RST{f[q] - 0xD0}" if 0xD0 <= f[q] <= 0xD7 else f"marker ff{f[q]:02x}"
                failure = (r0 * columns * ns, _corrupt(f"has a restart marker out of order at byte {pos}: RST{expected} "
                                                       f"expected before row {r0}, {found} found"))
                break
            pos = q + 1
        r1 = min(rows, r0 + rows_per_interval)
        end = _segment_end(f, pos)
        failure = _entropy(f[pos:end], diffs, r0, r1, columns, ns, lookups, where)
        pos = end
        r0 = r1
    bad = _predict(diffs, out, rows_per_interval, components, predictor, precision, pt)
    if bad is not None and (failure is None or bad[0] < failure[0]):
        raise _corrupt(f"decodes the sample at {where(bad[0])} to {bad[1]}, outside its {precision - pt} bits")
    if failure is not None:
        raise failure[1]
    return pos


def _entropy(data: bytes, diffs: np.ndarray, r0: int, r1: int, columns: int, ns: int, lookups: list[list[int]], where):
    """The differences of rows r0..r1 (one restart interval) from its entropy-coded data (F.2.2.1,
    H.1.2.2), with 0xFF00 unstuffed and 1 bits past its end; (sample index, error) at the first
    fault, else None."""
    data = data.replace(b"\xff\x00", b"\xff")
    real = 8 * len(data)
    data += b"\xff" * 6
    flat = diffs.reshape(-1)
    base = r0 * columns * ns
    bit = 0
    for k in range((r1 - r0) * columns * ns):
        byte, off = bit >> 3, bit & 7
        w = int.from_bytes(data[byte:byte + 5], "big")
        e = lookups[k % ns][(w >> (24 - off)) & 0xFFFF]
        if e == 0:
            if real - bit < 16:
                return base + k, _corrupt(f"scan data stops short at {where(base + k)}")
            return base + k, _corrupt(f"has no code in its Huffman table for the difference at {where(base + k)}")
        length, category = e >> 8, e & 0xFF
        if bit + length > real:
            return base + k, _corrupt(f"scan data stops short at {where(base + k)}")
        bit += length
        if category > 16:
            return base + k, _corrupt(f"has difference category {category} at {where(base + k)}; at most 16")
        if category == 0:
            diff = 0
        elif category == 16:
            diff = 32768
        else:
            if bit + category > real:
                return base + k, _corrupt(f"scan data stops short at {where(base + k)}")
            v = (w >> (40 - off - length - category)) & ((1 << category) - 1)
            bit += category
            diff = v if v >= 1 << (category - 1) else v - (1 << category) + 1
        flat[base + k] = diff
    return None


def _predict(diffs: np.ndarray, out: np.ndarray, rows_per_interval: int, components: list[int], predictor: int,
             precision: int, pt: int):
    """The samples from the differences (H.1.2.1, modulo 2^16), each restart interval on its own:
    its first row from the left (its first sample from 2^(P-Pt-1)), the first sample of every other
    row from above. Writes them, shifted by Pt, to `out`; returns (index in decoding order, value)
    of the first sample outside P - Pt bits, or None."""
    rows, columns, ns = diffs.shape
    v = np.zeros_like(diffs)
    initial = 1 << (precision - pt - 1)
    for r0 in range(0, rows, rows_per_interval):
        d = diffs[r0:r0 + rows_per_interval]
        block = v[r0:r0 + rows_per_interval]
        block[0] = initial + np.cumsum(d[0], axis=0)
        if predictor == 1 or len(d) == 1:
            # each row from its first sample, which comes from above
            block[1:, 0] = block[0, 0] + np.cumsum(d[1:, 0], axis=0)
            block[1:, 1:] = block[1:, :1] + np.cumsum(d[1:, 1:], axis=1)
        elif predictor == 2:
            block[1:] = block[0] + np.cumsum(d[1:], axis=0)
        else:
            _predict_loop(d, block, predictor)
    v &= 0xFFFF
    bad = np.flatnonzero(v.reshape(-1) >= 1 << (precision - pt))
    for i, c in enumerate(components):
        out[:, :, c] = v[:, :, i] << pt
    return None if bad.size == 0 else (int(bad[0]), int(v.reshape(-1)[bad[0]]))


def _predict_loop(d: np.ndarray, block: np.ndarray, predictor: int) -> None:
    """Predictors 3-7 (Table H.1) over the rows after an interval's first, sample by sample, modulo 2^16."""
    rows, columns, ns = d.shape
    dl = d.tolist()
    prev = [[int(block[0, c, i]) & 0xFFFF for c in range(columns)] for i in range(ns)]
    for r in range(1, rows):
        cur = [[0] * columns for _ in range(ns)]
        for i in range(ns):
            up, row = prev[i], cur[i]
            row[0] = (up[0] + dl[r][0][i]) & 0xFFFF
            for c in range(1, columns):
                ra, rb, rc = row[c - 1], up[c], up[c - 1]
                if predictor == 3:
                    px = rc
                elif predictor == 4:
                    px = ra + rb - rc
                elif predictor == 5:
                    px = ra + ((rb - rc) >> 1)
                elif predictor == 6:
                    px = rb + ((ra - rc) >> 1)
                else:
                    px = (ra + rb) >> 1
                row[c] = (px + dl[r][c][i]) & 0xFFFF
            block[r, :, i] = row
        prev = cur
