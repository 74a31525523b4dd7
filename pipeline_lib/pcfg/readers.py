"""Readers of the PCFG data stage's products, beside their writers (:mod:`.dataset`, :mod:`.mlm`).

* :func:`load_instances`: the BERT-masked MLM instances of a ``build_pretrain`` directory;
* :func:`vocab_size`: the size of a directory's ``vocab.txt``;
* :func:`load_task`, :func:`sentences_as_terminals`: a ``build_downstream`` task directory
  (``{split}.input_ids/input_mask/labels.npy`` for :data:`SPLITS`).

Training and evaluation code read the data through these, so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline_lib.data.store import read_meta
from pipeline_lib.pcfg.dataset import MLM_ARRAYS, SPLITS

__all__ = ["INSTANCE_FIELDS", "SPLITS", "load_instances", "load_task", "sentences_as_terminals",
           "vocab_size"]

# The instance arrays ``build_pretrain`` writes (one ``<name>.npy`` each).
INSTANCE_FIELDS = tuple(MLM_ARRAYS)


def load_instances(pretrain_dir: Path) -> dict[str, np.ndarray]:
    """The memory-mapped MLM instance arrays of a `pcfg build-pretrain` directory."""
    out = {}
    for name in INSTANCE_FIELDS:
        path = Path(pretrain_dir) / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: MLM instances missing (run the pcfg_pretrain rule)")
        out[name] = np.load(path, mmap_mode="r")
    return out


def vocab_size(data_dir: Path) -> int:
    """Size of the `vocab.txt` next to the PCFG arrays (one token per line)."""
    path = Path(data_dir) / "vocab.txt"
    return len(path.read_text().splitlines())


def load_task(task_dir: Path) -> dict:
    """Arrays of one PCFG downstream task: {split: (input_ids, input_mask, labels)}, classes."""
    task_dir = Path(task_dir)
    meta = read_meta(task_dir)
    data = {
        split: tuple(
            np.load(task_dir / f"{split}.{name}.npy") for name in ("input_ids", "input_mask", "labels")
        )
        for split in SPLITS
    }
    # label ids index the grammar's label names, which need not all occur (nor be contiguous)
    names = meta.get("labels", {}).get("names") or {}
    num_classes = max([int(k) + 1 for k in names] + [int(d[2].max()) + 1 for d in data.values()])
    return {"splits": data, "num_classes": num_classes}


def sentences_as_terminals(task_dir: Path, split: str, grammar) -> list[np.ndarray]:
    """The task's sentences as terminal indices of `grammar` (from the ids and vocab.txt)."""
    tokens = Path(task_dir, "vocab.txt").read_text().splitlines()
    index = {t: i for i, t in enumerate(grammar.terminals)}
    to_terminal = np.array([index.get(t, -1) for t in tokens])
    ids = np.load(Path(task_dir) / f"{split}.input_ids.npy")
    mask = np.load(Path(task_dir) / f"{split}.input_mask.npy")
    out = []
    for row, m in zip(ids, mask):
        words = to_terminal[row[1: int(m.sum()) - 1]]  # drop [CLS] ... [SEP]
        if (words < 0).any():
            raise ValueError(f"{task_dir}/{split}: a sentence has a non-terminal token")
        out.append(words)
    return out
