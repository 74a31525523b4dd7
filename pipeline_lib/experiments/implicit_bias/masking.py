"""Single-mask MLM instances: the loss Liu et al. (2023) define and the `optimal_loss` stage computes.

The paper's pre-training loss is L(theta) = E_{x,t}[-log f_theta(x_{-t})_{x_t}] with ONE masked
position t per sentence, drawn uniformly (liu2023 §3.1); the exact optimal loss is that loss at
the true conditionals. BERT's masking (15 %, up to 5 positions, 80/10/10 corruption) trains a
different objective: long sentences never show a single [MASK], and every visible token may be
a random one. `implicit_bias.masking: single` trains (and takes the trace of) L itself, so the
gap to the computed optimal loss measures how far the *trained objective* is from its optimum,
and at a minimiser of L the Fisher trace is its Hessian trace (Lemma 4.2). (Measured at laptop
scale, the two objectives leave similar gaps: 0.43 nats after 1,500 steps of batch 64 single-
mask, 0.40 after 2,000 BERT-masked; neither is near the optimum there, README "implicit_bias".)

The instances are rebuilt from the PCFG stage's BERT instances (the clean sentence is the
input with the masked-out ids put back), one uniformly drawn position per instance (each of
the `dup_factor` duplicates of a sentence draws its own), seeded: a pure function of
(arrays, mask id, seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def clean_input_ids(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The uncorrupted token ids: every masked-out position gets its original id back."""
    ids = np.array(arrays["input_ids"], copy=True)
    positions = np.asarray(arrays["masked_lm_positions"])
    weights = np.asarray(arrays["masked_lm_weights"]) > 0
    rows = np.broadcast_to(np.arange(len(ids))[:, None], positions.shape)
    ids[rows[weights], positions[weights]] = np.asarray(arrays["masked_lm_ids"])[weights]
    return ids


def single_mask_instances(arrays: dict[str, np.ndarray], mask_id: int, seed: int) -> dict:
    """One [MASK] per instance at a uniformly drawn word position (never [CLS]/[SEP])."""
    ids = clean_input_ids(arrays)
    mask = np.asarray(arrays["input_mask"])
    words = mask.sum(axis=1).astype(np.int64) - 2  # [CLS] w_1..w_n [SEP]
    if (words < 1).any():
        raise ValueError(f"an MLM instance has no word (row {int(np.argmax(words < 1))})")
    rng = np.random.default_rng(seed)
    pos = 1 + np.floor(rng.random(len(ids)) * words).astype(np.int64)
    rows = np.arange(len(ids))
    targets = ids[rows, pos].copy()
    ids[rows, pos] = mask_id
    return {
        "input_ids": ids,
        "input_mask": mask,
        "masked_lm_positions": pos[:, None].astype(np.int32),
        "masked_lm_ids": targets[:, None].astype(np.int32),
        "masked_lm_weights": np.ones((len(ids), 1), np.float32),
    }


def mask_id(data_dir: Path) -> int:
    """The [MASK] id of the `vocab.txt` next to the PCFG arrays."""
    tokens = (Path(data_dir) / "vocab.txt").read_text().splitlines()
    if "[MASK]" not in tokens:
        raise ValueError(f"{data_dir}/vocab.txt: no [MASK] token")
    return tokens.index("[MASK]")


def training_instances(liu: dict, data_dir: Path, seed: int) -> dict[str, np.ndarray]:
    """The arrays the MLM loss is trained (and its trace taken) on, per `implicit_bias.masking`."""
    from pipeline_lib.pcfg.readers import load_instances

    arrays = load_instances(data_dir)
    if liu["masking"] == "single":
        return single_mask_instances(arrays, mask_id(data_dir), seed)
    return arrays
