"""The one atomic-write implementation, and the JSON / JSON-lines readers beside it.

Every file the package writes goes through `atomic_open` (or a helper built on it): a temporary
sibling in the target directory, fsync, then `os.replace`, with the mode the umask gives a
normal file (mkstemp's 0600 would hide outputs from the group on a shared cluster). A crashed,
interrupted or SIGKILLed job therefore never leaves a half-written output that Snakemake would
take for a finished one, and an existing output survives a failed rewrite. `atomic_directory`
does the same for a whole directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike,
    mode: str = "w",
    encoding: str | None = "utf-8",
    newline: str | None = None,
) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; fsync and rename it over `path` on success."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    binary = "b" in mode
    try:
        os.chmod(temporary, 0o666 & ~_umask())
        with os.fdopen(
            descriptor,
            mode,
            encoding=None if binary else encoding,
            newline=None if binary else newline,
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace `path` with `text` (UTF-8)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def finite_json(obj: Any) -> Any:
    """`obj` with every NaN / Infinity float replaced by None: strict JSON, which readers in
    other languages (and `json.loads(..., parse_constant=...)` checks) accept."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """JSON with one-space indent and sorted keys, then a newline (the project's JSON style);
    never NaN or Infinity (they become null)."""
    with atomic_open(path, "w") as handle:
        json.dump(finite_json(obj), handle, indent=1, sort_keys=True, allow_nan=False)
        handle.write("\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict], **dumps_kwargs) -> None:
    with atomic_open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row, **dumps_kwargs) + "\n")


def copy_atomic(src: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Copy a file into place atomically (temporary sibling, fsync, rename)."""
    with atomic_open(dest, "wb") as out, open(src, "rb") as source:
        shutil.copyfileobj(source, out)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; on success it replaces `final`.

    On any error the temporary directory is removed and an existing `final` is untouched. The
    directory gets the umask's mode (mkdtemp's 0700 would hide it on a shared cluster).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A job killed with SIGKILL cannot clean up; its leftovers are removed by the next attempt.
    for stale in final.parent.glob(f".{final.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old.{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def text_problem(data: bytes) -> tuple[int, str] | None:
    """(line, what) of the first thing that makes `data` unusable as a text file (invalid
    UTF-8, a NUL or another control character), or None. Input files are checked with this
    before parsing, so a binary file is reported at a line instead of as a decode traceback,
    and no control character ends up inside a symbol, a word or a corpus."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return line, f"not UTF-8 text (byte {e.start}: {data[e.start:e.start + 1]!r}); is this a binary file?"
    found = _CONTROL.search(text)
    if found is None:
        return None
    i = found.start()
    line = text.count("\n", 0, i) + 1
    return line, f"control character {found.group()!r} at column {i - text.rfind(chr(10), 0, i)}"


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def read_jsonl(path: str | os.PathLike, *, skip_broken: bool = False) -> list[dict]:
    """The records of a JSON-lines file; `skip_broken` drops lines a killed writer cut short."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if skip_broken:
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    return rows


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
