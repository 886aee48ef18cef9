"""Data readers: the ../shared/data layout (images.tar + manifest.csv with md5 splits), plain
class folders (ImageFolder convention, split by the same md5 rule; PNG, JPEG and DICOM,
IMAGE_EXT), the PneumoniaMNIST .npz and Fashion-MNIST IDX files. Everything goes through
preprocess.py (a DICOM through dicom.py, the mirror of the service's decoder, first), and the
preprocessed arrays are cached per (source, its files' sizes and mtimes, size, channels, the
extensions read, the decoder's revision) so that training epochs do not decode JPEGs again."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import struct
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .dicom import DicomError
from .preprocess import DECODE_REVISION, PREPROCESS_VERSION, decode_rgb, preprocess_rgb

SPLITS = ("train", "val", "db", "query")
#: The one list of what a class folder's reader takes (any case); scripts/data/shared-data.ts's
#: contentTypeOf is the TypeScript side's. A .dcm file is decoded by dicom.py as the service
#: decodes it (uncompressed or deflated, RLE Lossless, JPEG Lossless, JPEG Baseline, 8-bit JPEG Extended, JPEG-LS or JPEG 2000, one frame: another one
#: stops the load, naming the file).
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".dcm")


class DataError(ValueError):
    """A source that cannot be read as a data set (missing, not one, no images): the user's
    mistake, which the CLI reports as an error line and a non-zero exit, not a traceback."""


def md5_split(md5_hex: str) -> str:
    """The split rule of ../shared/data (README): int(md5[:8], 16) % 100 -> 60/10/20/10."""
    v = int(md5_hex[:8], 16) % 100
    return "train" if v < 60 else "val" if v < 70 else "db" if v < 90 else "query"


@dataclass
class Record:
    id: str
    label: str
    split: str
    load: object  # () -> bytes | np.ndarray (H, W, 3) uint8


def _shared_records(root: Path) -> list[Record]:
    tar_path = root / "images.tar"
    with tarfile.open(tar_path) as tf:
        offsets = {m.name: (m.offset_data, m.size) for m in tf.getmembers() if m.isfile()}

    def loader(off: int, size: int):
        def load() -> bytes:
            with open(tar_path, "rb") as f:
                f.seek(off)
                return f.read(size)
        return load

    out = []
    with open(root / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            off, size = offsets[row["path"]]
            out.append(Record(row["path"], row["label"], row["split"], loader(off, size)))
    return out


def _debris(name: str) -> bool:
    """Archive debris, not classes or images: names starting with "." (macOS's ._x.jpg forks,
    .DS_Store) and __MACOSX folders. scripts/data/shared-data.ts skips the same."""
    return name.startswith(".") or name == "__MACOSX"


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _debris(p.name))


def _image_files(root: Path, cls: Path) -> list[Path]:
    return [p for p in sorted(cls.rglob("*"))
            if p.suffix.lower() in IMAGE_EXT and p.is_file() and not any(_debris(x) for x in p.relative_to(root).parts)]


def _folder_records(root: Path) -> list[Record]:
    out = []
    for cls in _class_dirs(root):
        for p in _image_files(root, cls):
            data = p.read_bytes()
            split = md5_split(hashlib.md5(data).hexdigest())
            out.append(Record(str(p.relative_to(root)), cls.name, split, (lambda d=data: d)))
    if not out:
        raise DataError(f"{root}: no class folders with {'/'.join(IMAGE_EXT)} images")
    return out


def _gray_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[:, :, None], 3, axis=2)


def _npz_records(path: Path) -> list[Record]:
    z = np.load(path)
    need = [f"{k}_{v}" for k in ("train", "val", "test") for v in ("images", "labels")]
    if set(need) - set(z.files):
        raise DataError(f"{path}: not a MedMNIST .npz (needs {', '.join(need)}; holds {', '.join(z.files)})")
    out = []
    for key, split in (("train", "train"), ("val", "val"), ("test", None)):
        imgs, labels = z[f"{key}_images"], z[f"{key}_labels"].reshape(-1)
        for i in range(len(imgs)):
            img = imgs[i]
            s = split or md5_split(hashlib.md5(img.tobytes()).hexdigest())
            s = s if s != "train" or split else "db"  # test images never train
            out.append(Record(f"{key}/{i}", str(int(labels[i])), s, (lambda a=img: _gray_rgb(a))))
    return out


def read_idx_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        magic, n, h, w = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise ValueError(f"{path}: not an IDX image file")
        return np.frombuffer(f.read(), dtype=np.uint8).reshape(n, h, w)


def _idx_records(root: Path) -> list[Record]:
    imgs = read_idx_images(root / "t10k-images-idx3-ubyte.gz")
    return [Record(f"fashion/{i}", "ood", "query", (lambda a=imgs[i]: _gray_rgb(a))) for i in range(len(imgs))]


def _npz_folder(root: Path) -> list[Path]:
    """The .npz files of a folder read as a MedMNIST set: one with no class folders, so that a
    stray .npz beside a site's class folders does not make them a MedMNIST set."""
    return sorted(root.glob("*.npz")) if root.is_dir() and not _class_dirs(root) else []


def _is_class_folder(root: Path) -> bool:
    """Whether records() reads `root` as class folders (no other layout matched)."""
    return (root.is_dir() and not ((root / "manifest.csv").exists() and (root / "images.tar").exists())
            and not _npz_folder(root) and not (root / "t10k-images-idx3-ubyte.gz").exists())


def empty_classes(source: str | os.PathLike) -> list[str]:
    """The folders of a class-folder source that hold no image it reads (empty, or only other
    extensions, e.g. .tif): they are no class of the data set, which the user should be told."""
    root = Path(source)
    return [c.name for c in _class_dirs(root) if not _image_files(root, c)] if _is_class_folder(root) else []


def records(source: str | os.PathLike) -> list[Record]:
    root = Path(source)
    if (root / "manifest.csv").exists() and (root / "images.tar").exists():
        return _shared_records(root)
    if root.is_file() and root.suffix == ".npz":
        return _npz_records(root)
    npz = _npz_folder(root)
    if npz:
        return _npz_records(npz[0])
    if (root / "t10k-images-idx3-ubyte.gz").exists():
        return _idx_records(root)
    if _is_class_folder(root):
        return _folder_records(root)
    raise DataError(f"{root}: not a data set (need manifest.csv + images.tar, class folders, .npz or IDX)")


@dataclass
class Arrays:
    x: np.ndarray  # (N, C, S, S) float16 in [0, 1]
    y: np.ndarray  # (N,) int64 class index (-1 when the label is not a known class)
    ids: list[str]


@dataclass
class DataSet:
    name: str
    classes: list[str]
    splits: dict[str, Arrays]


def known_only(ds: DataSet, name: str | None = None) -> DataSet:
    """`ds` without the rows whose label is not one of its classes (y = -1): what a model trained
    with classes held out sees."""
    keep = {s: np.nonzero(a.y >= 0)[0] for s, a in ds.splits.items()}
    return DataSet(name or ds.name, ds.classes, {s: Arrays(a.x[keep[s]], a.y[keep[s]], [a.ids[i] for i in keep[s]])
                                                 for s, a in ds.splits.items()})


def _progress(i: int, n: int, label: str) -> None:
    if sys.stderr.isatty() or i == n:
        width = 30
        done = int(width * i / max(n, 1))
        sys.stderr.write(f"\r{label} [{'#' * done}{'.' * (width - done)}] {i}/{n}")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()


_PENDING: list[Record] = []


def source_rgb(rec: Record) -> np.ndarray:
    """A record's source pixels, (H, W, 3) uint8, whether it is stored as encoded bytes or pixels."""
    raw = rec.load()
    return decode_rgb(raw) if isinstance(raw, bytes) else raw


def _preprocess_one(i: int, size: int, channels: int) -> np.ndarray:
    try:
        x = preprocess_rgb(source_rgb(_PENDING[i]), size, channels)
    except DicomError as e:
        # as the TypeScript evaluation names it (scripts/data/encode-set.ts): which file, and why
        raise DicomError(e.status, e.code, f"{_PENDING[i].id}: {e}") from None
    return x.astype(np.float16)


def _preprocess_all(recs: list[Record], size: int, channels: int, label: str) -> np.ndarray:
    """Preprocess every record, on all cores for a large set: forked workers inherit the
    records (their loaders are closures, which cannot be pickled) and return arrays."""
    global _PENDING
    xs = np.empty((len(recs), channels, size, size), dtype=np.float16)
    workers = min(os.cpu_count() or 1, 16)
    _PENDING = recs
    try:
        if workers > 1 and len(recs) >= 1000:
            import multiprocessing as mp
            from functools import partial
            with mp.get_context("fork").Pool(workers) as pool:
                it = pool.imap(partial(_preprocess_one, size=size, channels=channels), range(len(recs)), chunksize=32)
                for i, x in enumerate(it):
                    xs[i] = x
                    if i % 500 == 0 or i + 1 == len(recs):
                        _progress(i + 1, len(recs), label)
        else:
            for i in range(len(recs)):
                xs[i] = _preprocess_one(i, size, channels)
                if i % 500 == 0 or i + 1 == len(recs):
                    _progress(i + 1, len(recs), label)
    finally:
        _PENDING = []
    return xs


def _fingerprint(root: Path) -> str:
    """Path, size and mtime of every file the source holds: a folder whose images were added,
    removed or relabelled is preprocessed again instead of being read from the cache of its old
    contents. Walked from each top-level entry, so that linked class folders are followed as
    _folder_records follows them (rglob does not follow links below its start)."""
    tops = [root] if root.is_file() else sorted(root.iterdir())
    h = hashlib.sha1()
    for top in tops:
        for f in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def source_key(source: str | os.PathLike, size: int, channels: int) -> str:
    """What a load's arrays depend on (the source's path and files, size, channels, preprocessing):
    the cache's key, and a run's record of the data it was trained on."""
    root = Path(source).resolve()
    # the extensions too: a folder's .dcm files were fingerprinted but not read before IMAGE_EXT took them
    return hashlib.sha1(f"{root}|{size}|{channels}|v{PREPROCESS_VERSION}|d{DECODE_REVISION}|{','.join(IMAGE_EXT)}|{_fingerprint(root)}".encode()).hexdigest()[:12]


def load(source: str | os.PathLike, size: int, channels: int, cache_dir: str | os.PathLike | None = None,
         classes: list[str] | None = None) -> DataSet:
    """Preprocessed splits of a data set, cached as .npz. `classes` fixes the class order (for a
    model's own classes); by default it is the sorted labels of the source."""
    root = Path(source).resolve()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    cache_dir = Path(cache_dir or os.environ.get("MEDHASH_CACHE", Path.cwd() / ".medhash" / "cache"))
    cache = cache_dir / f"{root.name}-{size}-{channels}-{source_key(root, size, channels)}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        xs, labels, ids, splits = z["x"], list(z["labels"]), list(z["ids"]), list(z["splits"])
    else:
        recs = records(root)
        xs = _preprocess_all(recs, size, channels, f"preprocess {root.name}")
        labels = [r.label for r in recs]
        ids = [r.id for r in recs]
        splits = [r.split for r in recs]
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, x=xs, labels=np.array(labels), ids=np.array(ids), splits=np.array(splits))
        os.replace(tmp, cache)
    cls = classes or sorted(set(labels))
    index = {c: i for i, c in enumerate(cls)}
    y_all = np.array([index.get(str(l), -1) for l in labels], dtype=np.int64)
    split_arr = np.array(splits)
    out = {}
    for s in SPLITS:
        m = np.nonzero(split_arr == s)[0]
        out[s] = Arrays(xs[m], y_all[m], [ids[i] for i in m])
    return DataSet(root.name, list(cls), out)
