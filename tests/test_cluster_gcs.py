"""GCS for real: a GCS-API server on loopback (gcp-storage-emulator), a bucket made through
google-cloud-storage, then `snakemake --profile workflow/profiles/gcs` writes the results of
a real target (a corpus, and a T5 pre-trained on it) into the bucket: the same results as a
local run, a second run is a no-op, and no credential lands in any file, log or object. The
project's own gs:// reads (SentencePiece model, downstream sources, parameter files) run
against the same server.

Credentials: STORAGE_EMULATOR_HOST makes google-cloud-storage talk to the server anonymously;
the GCS storage plugin needs a project (SNAKEMAKE_STORAGE_GCS_PROJECT, or
--storage-gcs-project). A fake access token is put into the environment under the names the
Google clients read (GOOGLE_AUTH_TOKEN_FOR_TESTING is tensorstore's, GOOGLE_OAUTH_ACCESS_TOKEN
gcloud's) and must not appear anywhere afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cluster.gcs import gcs_server

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_config.yaml"
FIXTURES = REPO / "tests" / "data" / "downstream"
BIN = Path(sys.executable).parent
BUCKET, PREFIX = "bucket", "run"
TARGET = "results/transfer/pretrain/identity/summary.json"  # needs results/corpora/identity
FAKE_TOKEN = "ya29.FAKE-token-that-must-never-be-written-7d1c4e"
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The server's environment (also set in this process while the module runs)."""
    log = tmp_path_factory.mktemp("gcs-server") / "server.log"
    with gcs_server(log) as host:
        env = {
            "STORAGE_EMULATOR_HOST": host,
            "GOOGLE_CLOUD_PROJECT": "test-project",
            "SNAKEMAKE_STORAGE_GCS_PROJECT": "test-project",
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": FAKE_TOKEN,
            "GOOGLE_OAUTH_ACCESS_TOKEN": FAKE_TOKEN,
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            from google.cloud import storage

            storage.Client().create_bucket(BUCKET)
            yield {**env, "server_log": log}
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _bucket():
    from google.cloud import storage

    return storage.Client().bucket(BUCKET)


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "snakemake"), "--snakefile", str(REPO / "Snakefile"), TARGET,
           "--configfile", str(work / "config.yaml"), "--directory", str(work), "--cores", "2",
           *args]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    (work / "snakemake.log").open("a").write(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _comparable(name: str, data: bytes):
    """What must be equal between two runs: bytes, except the parts that are not science
    (npz archives carry zip timestamps: their arrays; train log lines carry throughput)."""
    if name.endswith(".npz"):
        with np.load(io.BytesIO(data)) as z:
            return {k: hashlib.sha256(z[k].tobytes()).hexdigest() for k in z.files}
    if name.endswith("metrics.jsonl"):
        return [{k: v for k, v in json.loads(line).items()
                 if not k.endswith("_per_s") and k != "mfu"} for line in data.splitlines()]
    return hashlib.sha256(data).hexdigest()


def _results(files: dict[str, bytes]) -> dict:
    """Outputs only (logs and benchmarks hold timings), keyed by their path under results/."""
    return {name: _comparable(name, data) for name, data in files.items()
            if not name.startswith(("results/logs/", "results/benchmarks/"))
            and not name.endswith(".snakemake_timestamp")}


def test_snakemake_writes_the_results_into_the_bucket(gcs, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "gcs"
    for work in (local, remote):
        work.mkdir()
        (work / "config.yaml").write_text(TINY.read_text())
    _snakemake(local)
    profile = ["--profile", str(REPO / "workflow" / "profiles" / "gcs"),
               "--default-storage-prefix", f"gs://{BUCKET}/{PREFIX}"]
    _snakemake(remote, *profile)

    blobs = {b.name: b for b in _bucket().list_blobs(prefix=f"{PREFIX}/")}
    stamps = {name: (b.updated, b.md5_hash) for name, b in blobs.items()}
    in_bucket = {name.removeprefix(f"{PREFIX}/"): b.download_as_bytes()
                 for name, b in blobs.items()}
    on_disk = {str(p.relative_to(local)): p.read_bytes()
               for p in sorted((local / "results").rglob("*"))
               if p.is_file() and not p.relative_to(local).parts[1] in ("ckpt", "cache")}
    expected = {f"results/transfer/pretrain/identity/{f}" for f in
                ("params.npz", "best_params.npz", "metrics.jsonl", "summary.json")}
    assert expected <= set(in_bucket), sorted(in_bucket)
    assert "results/corpora/identity/meta.json" in in_bucket  # a directory output, file by file
    assert "results/logs/transfer/pretrain/identity.log" in in_bucket
    assert _results(in_bucket) == _results(on_disk)
    # the job's resumable checkpoints stay on the machine that trains (not a declared output)
    assert not any("/ckpt/" in name for name in in_bucket)
    assert list((remote / "results" / "ckpt").rglob("commit_success.txt"))

    # a second run finds everything up to date in the bucket and changes nothing
    again = _snakemake(remote, *profile)
    assert "Nothing to be done" in again.stdout + again.stderr
    after = {b.name: (b.updated, b.md5_hash) for b in _bucket().list_blobs(prefix=f"{PREFIX}/")}
    assert after == stamps

    # no credential in any file of either working directory (results, logs, .snakemake
    # metadata and storage copies), in any object, or in the server's request log
    token = FAKE_TOKEN.encode()
    for work in (local, remote):
        leaked = [str(p) for p in work.rglob("*") if p.is_file() and token in p.read_bytes()]
        assert not leaked
    assert not [name for name, data in in_bucket.items() if token in data]
    assert token not in gcs["server_log"].read_bytes()


def test_gs_reads_of_the_project(gcs, tmp_path):
    """vocab.spm_model, a downstream source and a parameter file given as gs:// URIs."""
    from pipeline_lib.data.downstream import read_splits
    from pipeline_lib.data.layout_config import layout_from_config
    from pipeline_lib.remote import RemoteError, local_copy
    from pipeline_lib.train.checkpoint import export_params, load_params

    bucket = _bucket()
    # the SentencePiece model (seqio's test model stands in for T5's cc_all.32000)
    import importlib.util  # seqio's file, without importing seqio (and TensorFlow)

    seqio_dir = Path(importlib.util.find_spec("seqio").origin).parent
    spm = seqio_dir / "test_data" / "sentencepiece" / "sentencepiece.model"
    bucket.blob("assets/spm.model").upload_from_filename(str(spm))
    text = "the quick brown fox"
    remote_layout = layout_from_config(
        {"vocab": {"layout": "paper", "spm_model": f"gs://{BUCKET}/assets/spm.model"}},
        cache_dir=tmp_path / "cache")
    local_layout = layout_from_config({"vocab": {"layout": "paper", "spm_model": str(spm)}})
    assert remote_layout.encode_text(text) == local_layout.encode_text(text)

    # a downstream data set under a gs:// prefix reads exactly as its local directory
    for f in sorted((FIXTURES / "squad").iterdir()):
        bucket.blob(f"downstream/squad/{f.name}").upload_from_filename(str(f))
    from_gcs = read_splits("squad", {"source": f"gs://{BUCKET}/downstream/squad",
                                     "cache_dir": str(tmp_path / "cache")})
    assert from_gcs == read_splits("squad", {"source": str(FIXTURES / "squad")})

    # a parameter file (e.g. a released checkpoint) given as a gs:// URI
    params = {"encoder": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    export_params(params, tmp_path / "params.npz")
    bucket.blob("ckpt/params.npz").upload_from_filename(str(tmp_path / "params.npz"))
    loaded = load_params(f"gs://{BUCKET}/ckpt/params.npz", cache_dir=tmp_path / "params")
    np.testing.assert_array_equal(loaded["encoder/kernel"], params["encoder"]["kernel"])

    # fetched once: the cached copy serves a second read even after the object is gone
    bucket.blob("ckpt/params.npz").delete()
    assert load_params(f"gs://{BUCKET}/ckpt/params.npz", cache_dir=tmp_path / "params")
    # a missing object is one line naming the URI; no half-written file is left in the cache
    with pytest.raises(FileNotFoundError, match=f"gs://{BUCKET}/nope.npz: no such object"):
        local_copy(f"gs://{BUCKET}/nope.npz", tmp_path / "missing")
    assert not list((tmp_path / "missing").glob("*"))
    with pytest.raises(RemoteError, match="not a gs://bucket/object URI"):
        local_copy(f"gs://{BUCKET}", tmp_path / "missing")
