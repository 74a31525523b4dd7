"""On-disk format of a generated data set: memory-mappable token arrays + meta.json + samples.

    <dir>/meta.json                      what, how, counts, vocabulary layout, checksums
    <dir>/sample.jsonl                   the first examples, ids and a readable rendering
    <dir>/<source>/<split>.<field>.tokens.npy    flat token ids (uint16 when the vocab fits)
    <dir>/<source>/<split>.<field>.offsets.npy   int64, n+1 row boundaries

A data set is written into a sibling temporary directory and renamed into place at the end, so
an interrupted job leaves nothing half-written under the final name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from pipeline_lib.data.ragged import Ragged

FORMAT_VERSION = 1
FIELDS = ("inputs", "targets")


class StoreError(ValueError):
    """A data directory that is missing, incomplete or corrupt."""


def token_dtype(model_vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if model_vocab_size <= 1 << 16 else np.dtype(np.int32)


def array_paths(root: Path, source: str, split: str, field: str) -> tuple[Path, Path]:
    base = root / source / f"{split}.{field}"
    return base.with_name(base.name + ".tokens.npy"), base.with_name(base.name + ".offsets.npy")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_split(root: Path, source: str, split: str, field: str, data: Ragged, dtype) -> dict:
    tokens_path, offsets_path = array_paths(root, source, split, field)
    tokens_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(tokens_path, data.values.astype(dtype, copy=False), allow_pickle=False)
    np.save(offsets_path, data.offsets.astype(np.int64, copy=False), allow_pickle=False)
    return {
        str(p.relative_to(root)): sha256_file(p) for p in (tokens_path, offsets_path)
    }


def length_stats(lengths: np.ndarray, digits: int = 3) -> dict:
    """min / mean / max of a length array for meta.json (zeros for an empty array)."""
    # NB: `min(initial=0)` makes "min" 0 whatever the lengths are (a known bug, kept until the
    # fix lands with its own regression test, so this refactor changes no output byte).
    return {
        "min": int(lengths.min(initial=0)),
        "mean": round(float(lengths.mean()) if lengths.size else 0.0, digits),
        "max": int(lengths.max(initial=0)),
    }


def read_split(root: Path, source: str, split: str, field: str, mmap: bool = True) -> Ragged:
    tokens_path, offsets_path = array_paths(Path(root), source, split, field)
    for p in (tokens_path, offsets_path):
        if not p.exists():
            raise StoreError(f"{p}: missing (was the data set generated completely?)")
    try:
        tokens = np.load(tokens_path, mmap_mode="r" if mmap else None, allow_pickle=False)
        offsets = np.load(offsets_path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise StoreError(f"{tokens_path.parent}: cannot read {split}.{field}: {e}") from None
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or offsets[-1] != tokens.size:
        raise StoreError(f"{offsets_path}: offsets do not match {tokens_path.name}")
    return Ragged(tokens, offsets)


def read_meta(root: Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.exists():
        raise StoreError(f"{path}: missing")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    return meta


def verify_checksums(root: Path) -> None:
    meta = read_meta(root)
    for rel, digest in meta["checksums"].items():
        path = Path(root) / rel
        if not path.exists():
            raise StoreError(f"{path}: missing")
        if sha256_file(path) != digest:
            raise StoreError(f"{path}: checksum mismatch (corrupt or modified file)")
