"""Shared fixtures. Tests may read ../shared (reference data); the workflow never does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PIPELINE_SHARED_DIR", REPO.parent / "shared"))
WU_SAMPLES = SHARED / "data" / "wu2022_samples"


@pytest.fixture
def wu_samples_dir() -> Path:
    if not WU_SAMPLES.is_dir():
        pytest.skip(f"original Wu et al. samples not found at {WU_SAMPLES}")
    return WU_SAMPLES
