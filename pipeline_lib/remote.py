"""Local copies of configured remote files (gs:// URIs), fetched only when the config names one.

The client is google-cloud-storage with its own credential discovery (Application Default
Credentials: `gcloud auth application-default login`, a service account on a cloud VM, or
GOOGLE_APPLICATION_CREDENTIALS); nothing here reads, stores or logs a credential. With
STORAGE_EMULATOR_HOST set (a GCS-API server such as gcp-storage-emulator, as the tests use)
the client talks to that server anonymously.

A download goes through `atomic_open`, so an interrupted fetch never leaves a half file in
the cache that a later run would take for the object; the cache key is the URI (sha256), so
a changed URI fetches afresh. Failures are one line naming the URI (`RemoteError`, or
FileNotFoundError for a missing object), never a client traceback.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline_lib.errors import PipelineError
from pipeline_lib.files import atomic_open


class RemoteError(PipelineError, OSError):
    """A gs:// object that could not be fetched (credentials, permissions, network)."""


def split_uri(uri: str) -> tuple[str, str]:
    """gs://bucket/key -> (bucket, key); a URI without both is a RemoteError."""
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    if not uri.startswith("gs://") or not bucket or not key:
        raise RemoteError(f"{uri}: not a gs://bucket/object URI")
    return bucket, key


def _client():
    from google.cloud import storage  # only imported when the config asks for a gs:// file

    try:
        return storage.Client()
    except Exception as e:  # google.auth's DefaultCredentialsError, a missing project, ...
        raise RemoteError(
            f"cannot reach Google Cloud Storage: {type(e).__name__} (set up credentials with "
            "`gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS)"
        ) from None


def local_copy(uri: str, cache_dir: str | Path) -> Path:
    """A local path for `uri`: the path itself, or a cached download of a gs:// object."""
    if not uri.startswith("gs://"):
        path = Path(uri)
        if not path.exists():
            raise FileNotFoundError(f"{uri}: file not found")
        return path
    bucket, key = split_uri(uri)
    cache_dir = Path(cache_dir)
    name = hashlib.sha256(uri.encode()).hexdigest()[:16] + "-" + key.rsplit("/", 1)[-1]
    target = cache_dir / name
    if target.exists():
        return target
    from google.api_core import exceptions

    blob = _client().bucket(bucket).blob(key)
    try:
        with atomic_open(target, "wb") as handle:
            blob.download_to_file(handle)
    except exceptions.NotFound:
        raise FileNotFoundError(f"{uri}: no such object in gs://{bucket}") from None
    except exceptions.GoogleAPICallError as e:
        # the status line only (e.g. "403 Forbidden"): a response body could quote a header
        raise RemoteError(f"{uri}: download failed ({e.code} {type(e).__name__})") from None
    return target
