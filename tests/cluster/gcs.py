"""A real GCS-API server (gcp-storage-emulator) on a free loopback port, for the GCS tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MODULES = ("gcp_storage_emulator", "snakemake_storage_plugin_gcs", "google.cloud.storage")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcs_server(log: Path) -> Iterator[str]:
    """Start the server (in memory, output to `log`), wait until it listens, yield its
    `STORAGE_EMULATOR_HOST` URL; stop it on exit, also when the test fails."""
    for module in MODULES:
        pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[cluster]'")
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory"], stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the GCS-API server did not start"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
