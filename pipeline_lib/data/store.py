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
    if not lengths.size:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {
        "min": int(lengths.min()),
        "mean": round(float(lengths.mean()), digits),
        "max": int(lengths.max()),
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
    # Cheap structural checks on what the loader is about to trust (a flipped byte that keeps
    # the .npy header valid is caught by the checksums: `verify_checksums`).
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise StoreError(f"{tokens_path}: expected a 1-D integer array, got {tokens.dtype} "
                         f"of shape {tokens.shape}")
    if not np.issubdtype(offsets.dtype, np.integer):
        raise StoreError(f"{offsets_path}: expected integer offsets, got {offsets.dtype}")
    if offsets.ndim != 1 or offsets.size == 0 or offsets[0] != 0 or offsets[-1] != tokens.size:
        raise StoreError(f"{offsets_path}: offsets do not match {tokens_path.name}")
    if offsets.size > 1 and bool((np.diff(offsets) < 0).any()):
        raise StoreError(f"{offsets_path}: offsets are not monotonic")
    return Ragged(tokens, offsets)


def check_token_range(root: Path, data: Ragged, where: str, vocab_size: int) -> None:
    """Every id below the model's vocabulary (JAX's gather would clamp silently otherwise)."""
    if data.values.size and (int(data.values.max()) >= vocab_size or int(data.values.min()) < 0):
        raise StoreError(
            f"{root}: {where} holds token ids in [{int(data.values.min())}, "
            f"{int(data.values.max())}], outside the model vocabulary [0, {vocab_size})"
        )


def read_meta(root: Path) -> dict:
    path = Path(root) / "meta.json"
    if not path.exists():
        raise StoreError(f"{path}: missing")
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: not UTF-8 text at byte {e.start} (corrupt file)") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
        )
    for key in ("checksums", "sources"):
        if key in meta and not isinstance(meta[key], dict):
            raise StoreError(f"{path}: {key!r} must be an object, got {type(meta[key]).__name__}")
    return meta


def verify_checksums(root: Path) -> None:
    """Every file listed has its recorded sha256, and every data file is listed."""
    root = Path(root)
    meta = read_meta(root)
    if not isinstance(meta.get("checksums"), dict):
        raise StoreError(f"{root / 'meta.json'}: no 'checksums' (every data file's sha256 is "
                         "required)")
    for rel, digest in meta["checksums"].items():
        path = root / rel
        if not path.exists():
            raise StoreError(f"{path}: missing")
        if sha256_file(path) != digest:
            raise StoreError(f"{path}: checksum mismatch (corrupt or modified file)")
    unlisted = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.npy")
        if str(p.relative_to(root)) not in meta["checksums"]
    )
    if unlisted:
        raise StoreError(f"{root / unlisted[0]}: not listed in meta.json's checksums")


def verify_counts(root: Path) -> dict[str, dict[str, int]]:
    """The rows of every source and split, checked against meta.json's `counts`."""
    root = Path(root)
    meta = read_meta(root)
    found: dict[str, dict[str, int]] = {}
    for source, info in (meta.get("sources") or {}).items():
        counts = info.get("counts") if isinstance(info, dict) else None
        if not isinstance(counts, dict):
            raise StoreError(f"{root / 'meta.json'}: sources.{source}.counts missing")
        found[source] = {}
        for split, expected in counts.items():
            if split in ("generated", "distinct_inputs"):  # generation statistics, not splits
                continue
            rows = {read_split(root, source, split, field, mmap=True).n for field in FIELDS}
            if rows != {expected}:
                raise StoreError(
                    f"{root / source}: {split} has {sorted(rows)} rows but meta.json's "
                    f"counts say {expected}"
                )
            found[source][split] = expected
    return found
