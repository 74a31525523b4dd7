"""Models (flax NNX) with T5X's numerics and parameter names.

* `configs`: T5 size presets (frozen dataclasses), and the validation helpers every model
  config shares.
* `layers`: shared building blocks (T5 LayerNorm, dense kernels with T5X initialisers, their
  biased counterparts `LayerNorm` and `Linear`, relative position bias, attention with a
  key/value cache, MLPs, embedding) and flat '/'-joined parameter dictionaries
  (`flat_params`, `load_flat_params`).
* `t5`: T5 v1.0 / v1.1, object and functional (pure, jittable) APIs, incremental decoding.
* `interop`: Hugging Face ``transformers`` checkpoints <-> project weights (needs ``safetensors``;
  imported on demand so that nothing here needs torch).
"""

from pipeline_lib.models.configs import (
    T5_PRESETS,
    T5Config,
    t5_config,
    t5_config_from_dict,
    validate_t5_config,
)
from pipeline_lib.models.layers import flat_params, flat_to_state, load_flat_params
from pipeline_lib.models.t5 import (
    T5,
    DecodeCache,
    greedy_decode,
    shift_right,
    split_model,
    t5_cached_logits,
    t5_decode_step,
    t5_forward,
    t5_init_cache,
    t5_matmul_flops,
)

__all__ = [
    "T5",
    "T5_PRESETS",
    "DecodeCache",
    "T5Config",
    "flat_params",
    "flat_to_state",
    "greedy_decode",
    "load_flat_params",
    "shift_right",
    "split_model",
    "t5_cached_logits",
    "t5_config",
    "t5_config_from_dict",
    "t5_decode_step",
    "t5_forward",
    "t5_init_cache",
    "t5_matmul_flops",
    "validate_t5_config",
]
