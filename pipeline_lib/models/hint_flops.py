"""Analytic forward FLOPs of HINT and of the T0-style concatenation baseline (requirement 12).

Matmul FLOPs only, 2 per multiply-add, one example; I, X, Y = instruction, input and target
tokens (the same accounting as `t5.t5_matmul_flops`, which ignores norms, softmax and
activations; the tests check every total against XLA's ``cost_analysis()`` within [0.9, 1.0]):

    F_hyper(I) = F_enc(I) + 4 LC d inner + 4 I d inner + 4 LC I inner
                 + L * sum_type rows * (2 d^2 + 2 d out)
    F_inst     = F_T5(X -> Y) + 4 d a (n_enc X + n_dec Y) + 4 P inner (n_enc X + 2 n_dec Y)
                 + 4 n_dec Y I inner + 4 n_dec I d inner

The last F_inst term (projecting H_instr for every cross-attention) is paid once per task when
the per-task cache holds it. For n instances of one task:

    cached(n)   = F_hyper + F_fid_kv + n (F_inst - F_fid_kv)
    uncached(n) = n (F_hyper + F_inst)           (the released code)
    concat(n)   = n F_T5(I + X -> Y)             (T0: instruction and input in one sequence)
"""

from __future__ import annotations

import math

from pipeline_lib.models.hint_config import HyperT5Config
from pipeline_lib.models.hint_model import generator_out_features
from pipeline_lib.models.t5 import t5_matmul_flops


def encoder_flops(cfg: HyperT5Config, length: int) -> int:
    """F_enc: the T5 encoder stack on ``length`` tokens (projections, scores, MLPs)."""
    d, inner, ff = cfg.d_model, cfg.qkv_dim, cfg.d_ff
    n_in = 3 if cfg.mlp in ("gated-gelu", "swiglu") else 2
    attention = 8 * length * d * inner + 4 * length * length * inner
    return cfg.num_encoder_layers * (attention + 2 * length * d * ff * n_in)


def hyper_flops_terms(cfg: HyperT5Config, instruction: int) -> dict[str, int]:
    """The terms of F_hyper(I): hyperencoder, hyperattn (projections and scores), generators."""
    d, inner, i = cfg.d_model, cfg.qkv_dim, instruction
    lc = cfg.num_slots * cfg.num_components
    generators = sum(
        (end - start) * (2 * d * d + 2 * d * generator_out_features(cfg, kind))
        for kind, (start, end) in cfg.component_ranges.items()
    )
    return {
        "hyperencoder": encoder_flops(cfg, i),
        "hyperattn_query_out": 4 * lc * d * inner,
        "hyperattn_key_value": 4 * i * d * inner,
        "hyperattn_scores": 4 * lc * i * inner,
        "generator_mlps": cfg.num_slots * generators,
    }


def instance_flops_terms(
    cfg: HyperT5Config, instruction: int, inputs: int, targets: int
) -> dict[str, int]:
    """The terms of F_inst: the T5 on X -> Y plus adapters, prefixes and FiD."""
    d, inner = cfg.d_model, cfg.qkv_dim
    n_enc, n_dec = cfg.num_encoder_layers, cfg.num_decoder_layers
    a = cfg.adapter_size if cfg.use_adapter else 0
    p = cfg.num_prefix_tokens if cfg.has_prefix else 0
    fid = cfg.use_fusion_in_decoder
    return {
        "t5": t5_matmul_flops(cfg, 1, inputs, targets),
        "adapters": 4 * d * a * (n_enc * inputs + n_dec * targets),
        "prefixes": 4 * p * inner * (n_enc * inputs + 2 * n_dec * targets),
        "fid_scores": 4 * n_dec * targets * instruction * inner if fid else 0,
        "fid_key_value": 4 * n_dec * instruction * d * inner if fid else 0,
    }


def hint_flops(
    cfg: HyperT5Config, instruction: int, inputs: int, targets: int
) -> dict[str, object]:
    """Every term, the per-example totals, and the break-even number of instances per task.

    ``break_even_n``: the smallest n with cached(n) < concat(n) (None if never: an instance of
    HINT would cost at least as much as a concatenated one).
    """
    hyper = hyper_flops_terms(cfg, instruction)
    inst = instance_flops_terms(cfg, instruction, inputs, targets)
    f_hyper, f_inst = sum(hyper.values()), sum(inst.values())
    per_task = inst["fid_key_value"]
    f_inst_cached = f_inst - per_task
    f_concat = t5_matmul_flops(cfg, 1, instruction + inputs, targets)
    saving = f_concat - f_inst_cached
    break_even = math.floor((f_hyper + per_task) / saving) + 1 if saving > 0 else None
    return {
        "hyper_terms": hyper,
        "instance_terms": inst,
        "F_hyper": f_hyper,
        "F_inst": f_inst,
        "F_inst_cached": f_inst_cached,
        "F_per_task_cached": f_hyper + per_task,
        "F_concat": f_concat,
        "break_even_n": break_even,
    }


def cost_for_n(
    cfg: HyperT5Config, instruction: int, inputs: int, targets: int, n: int
) -> dict[str, int]:
    """cached(n), uncached(n) and concat(n) for n instances of one task."""
    f = hint_flops(cfg, instruction, inputs, targets)
    return {
        "cached": f["F_per_task_cached"] + n * f["F_inst_cached"],
        "uncached": n * (f["F_hyper"] + f["F_inst"]),
        "concat": n * f["F_concat"],
    }


__all__ = ["cost_for_n", "encoder_flops", "hint_flops", "hyper_flops_terms", "instance_flops_terms"]
