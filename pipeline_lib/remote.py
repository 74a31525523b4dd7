"""Local copies of configured remote files (gs:// URIs), fetched only when the config names one."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline_lib.files import atomic_open


def local_copy(uri: str, cache_dir: str | Path) -> Path:
    """A local path for `uri`: the path itself, or a cached download of a gs:// object."""
    if not uri.startswith("gs://"):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{uri}: file not found")
        return path
    cache_dir = Path(cache_dir)
    name = hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + uri.rsplit("/", 1)[-1]
    target = cache_dir / name
    if target.exists():
        return target
    from google.cloud import storage  # only imported when the config asks for a gs:// file

    bucket, _, blob = uri.removeprefix("gs://").partition("/")
    with atomic_open(target, "wb") as handle:
        storage.Client().bucket(bucket).blob(blob).download_to_file(handle)
    return target
