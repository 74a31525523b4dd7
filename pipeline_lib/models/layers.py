"""Shared Transformer building blocks (flax NNX), with T5X's numerics and parameter names.

Conventions, shared by every model in this package:

* Parameters are float32 and 2-D where T5X stores them 2-D (``[in, out]`` kernels, no biases),
  so flattened paths and shapes match T5X checkpoints and the init-scheme regexes. The T5
  layers (`RMSNorm`, `Dense`) are bias-free; `LayerNorm` and `Linear` are their biased
  counterparts, for BERT and the decoder LM.
* Activations are computed in ``dtype`` (float32, or bfloat16 on accelerators); LayerNorm
  statistics and the softmax inputs are float32 where T5X makes them float32.
* Dropout is a pure function of an explicit PRNG key: a module gets ``rng=None`` when it must be
  deterministic (eval, or rate 0) and a key when it may drop. Nothing here holds RNG state, so
  ``nnx.split(model, nnx.Param, ...)`` leaves an empty "rest" and a jitted step stays pure.
* Activations are ``[batch, length, features]``; attention heads are ``[batch, length, heads,
  head_dim]`` (a free reshape of the projection output); attention logits ``[batch, heads,
  q_length, kv_length]``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.extend.random import threefry_2x32

Array = jax.Array
Initializer = jax.nn.initializers.Initializer

# --------------------------------------------------------------------------------------------
# T5X default initialisers (t5x/examples/t5/layers.py and network.py).
# --------------------------------------------------------------------------------------------

EMBED_INIT: Initializer = jax.nn.initializers.normal(stddev=1.0)
"""Token embedding: N(0, 1) (T5X network.py, ``token_embedder``)."""

ATTENTION_INIT: Initializer = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")
"""q/k/v/out kernels (T5X ``MultiHeadDotProductAttention.kernel_init``)."""

MLP_INIT: Initializer = jax.nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")
"""MLP kernels and T5 v1.1's ``logits_dense`` (T5X ``DenseGeneral`` default)."""

RELPOS_INIT: Initializer = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")
"""Relative position bias table ``[heads, buckets]`` (T5X network.py, ``relpos_bias``)."""


def query_init(head_dim: int, base: Initializer = ATTENTION_INIT) -> Initializer:
    """``base`` divided by sqrt(head_dim).

    T5 has no 1/sqrt(d) in its attention logits; T5X folds that factor into the query
    initialiser instead (equivalent under Adafactor's parameter-scaled updates).
    """
    scale = 1.0 / math.sqrt(head_dim)

    def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
        return base(key, shape, dtype) * jnp.asarray(scale, dtype)

    return init


# --------------------------------------------------------------------------------------------
# Dropout with explicit keys.
# --------------------------------------------------------------------------------------------


def split_rng(rng: Array | None, n: int) -> tuple[Array | None, ...]:
    """``n`` independent keys from ``rng``, or ``n`` Nones when dropout is off."""
    if rng is None:
        return (None,) * n
    return tuple(jax.random.split(rng, n))


DROPOUT_MASK_BITS = 16
"""Bits of randomness per dropout decision (see `dropout_keep_mask`)."""


def quantized_keep_prob(keep_prob: float) -> float:
    """The keep probability `dropout_keep_mask` really uses: ``keep_prob`` rounded to a multiple
    of 2**-16, kept inside [2**-16, 1 - 2**-16] so that a rate in (0, 1) never becomes 0 or 1.

    The error is at most 2**-17 ~ 7.6e-6 (at most 2**-16 ~ 1.5e-5 for rates below 2**-17),
    far below the sampling noise of any mask the models draw.
    """
    scale = 1 << DROPOUT_MASK_BITS
    return min(max(round(keep_prob * scale), 1), scale - 1) / scale


def _is_threefry_key(rng: Array) -> bool:
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(rng)) == "threefry2x32"
    return rng.shape == (2,) and rng.dtype == jnp.uint32  # a legacy raw threefry key


def _random_words(rng: Array, count: int) -> Array:
    """``count`` (rounded up to even) uint32 words, a pure function of ``rng``.

    For threefry keys (JAX's default), the Threefry-2x32 hash of the counters 0..count-1 taken
    as pairs, both output words kept: JAX's own non-partitionable ``random_bits`` scheme, 64
    bits per hash. ``jax.random.bits`` under the default ``jax_threefry_partitionable`` hashes
    once per output word and keeps 32 of the 64 bits, which doubles the cost on CPU. We call
    the hash directly instead of flipping that global flag. Other key kinds: ``random.bits``.
    """
    count += count % 2
    if _is_threefry_key(rng):
        data = jax.random.key_data(rng)
        return threefry_2x32((data[0], data[1]), jax.lax.iota(jnp.uint32, count))
    return jax.random.bits(rng, (count,), jnp.uint32)


def dropout_keep_mask(rng: Array, keep_prob: float, shape: tuple[int, ...]) -> Array:
    """Boolean mask, True with probability `quantized_keep_prob` (``keep_prob``) per element.

    Why not ``jax.random.bernoulli``: it spends one threefry hash (64 bits, of which the
    partitionable scheme keeps 32) and a float32 uniform per element, and on CPU that RNG was
    ~15% of a BERT training step. Here each 64-bit hash yields four 16-bit draws (see
    `_random_words`), compared with an integer threshold: a quarter of the hashing and no float
    conversion (a [32, 4, 128, 128] dropout took ~4.5 ms instead of ~21 ms). The mask is a
    pure function of ``rng`` and ``shape`` (no global state or config flag), so a step is
    reproducible from (seed, step).
    """
    size = math.prod(shape)
    threshold = round(quantized_keep_prob(keep_prob) * (1 << DROPOUT_MASK_BITS))
    words = _random_words(rng, -(-size // 2))
    # [n] uint32 -> [n, 2] uint16 (a free reinterpretation; which half comes first is the
    # platform's byte order, fixed for a given machine, which is all reproducibility needs).
    halves = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(-1)
    return (halves[:size] < jnp.uint16(threshold)).reshape(shape)


def dropout(
    x: Array, rate: float, rng: Array | None, broadcast_dims: tuple[int, ...] = ()
) -> Array:
    """Inverted dropout; the identity when ``rng`` is None or ``rate`` is 0.

    ``broadcast_dims`` share one mask along those axes: T5X drops with ``broadcast_dims=(-2,)``
    (the same features dropped at every position) almost everywhere, and so do we. Kept values
    are divided by the keep probability the mask really has (`quantized_keep_prob`), so the
    expectation of every element is exactly preserved.
    """
    if rng is None or rate == 0.0:
        return x
    keep_prob = quantized_keep_prob(1.0 - rate)
    shape = list(x.shape)
    for dim in broadcast_dims:
        shape[dim] = 1
    keep = dropout_keep_mask(rng, keep_prob, tuple(shape))
    return jnp.where(keep, x * jnp.asarray(1.0 / keep_prob, x.dtype), jnp.zeros_like(x))


# --------------------------------------------------------------------------------------------
# Basic layers.
# --------------------------------------------------------------------------------------------


class RMSNorm(nnx.Module):
    """T5 LayerNorm: x / sqrt(mean(x^2) + eps) * scale; no mean subtraction, no bias.

    Statistics in float32 whatever the compute dtype (T5X ``LayerNorm``); param ``scale``.
    """

    def __init__(self, features: int, *, eps: float = 1e-6, dtype: Any = jnp.float32):
        self.eps = eps
        self.dtype = jnp.dtype(dtype)
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        x = x.astype(jnp.float32)
        y = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps)
        return y.astype(self.dtype) * self.scale[...].astype(self.dtype)


class LayerNorm(nnx.Module):
    """(x - mean) / sqrt(var + eps) * scale + bias; statistics in float32 (params ``scale``,
    ``bias``). BERT's norm, and the decoder LM's outside Transformer++."""

    def __init__(self, features: int, *, eps: float, dtype: Any = jnp.float32):
        self.eps = eps
        self.dtype = jnp.dtype(dtype)
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        y = centered * jax.lax.rsqrt(variance + self.eps) * self.scale[...] + self.bias[...]
        return y.astype(self.dtype)


class Dense(nnx.Module):
    """A bias-free ``x @ kernel`` with a 2-D float32 kernel ``[in_features, out_features]``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_init: Initializer,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        shape = (in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))

    def __call__(self, x: Array) -> Array:
        return jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))


class Linear(nnx.Module):
    """``x @ kernel + bias``, a 2-D float32 kernel ``[in, out]``; ``use_bias=False`` drops it."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_init: Initializer,
        use_bias: bool = True,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        shape = (in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape, jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32)) if use_bias else None

    def __call__(self, x: Array) -> Array:
        y = jnp.dot(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y


class Embed(nnx.Module):
    """Token embedding ``[vocab, features]`` that can also produce tied output logits."""

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        embedding_init: Initializer = EMBED_INIT,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dtype = jnp.dtype(dtype)
        self.embedding = nnx.Param(
            embedding_init(rngs.params(), (num_embeddings, features), jnp.float32)
        )

    def __call__(self, ids: Array) -> Array:
        """``[...]`` int ids -> ``[..., features]`` in the compute dtype (a gather)."""
        return jnp.take(self.embedding[...], ids, axis=0).astype(self.dtype)

    def attend(self, x: Array) -> Array:
        """``x @ embedding.T`` in float32 (T5X ``attend_dtype=float32``, for stable logits)."""
        return jnp.einsum("...d,vd->...v", x.astype(jnp.float32), self.embedding[...])


# --------------------------------------------------------------------------------------------
# Relative position bias (T5).
# --------------------------------------------------------------------------------------------


def relative_position_bucket(
    relative_position: np.ndarray, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's bucket of each ``key_position - query_position`` (numpy; shapes are static).

    Half the buckets hold exact small distances, the rest grow logarithmically up to
    ``max_distance``; bidirectional attention spends half the buckets on each sign, causal
    attention maps every future position to bucket 0. The same arithmetic as T5X, including its
    float32 epsilon (checked equal to Hugging Face's for |distance| < 3000).
    """
    ret = np.zeros_like(relative_position, dtype=np.int32)
    n = -np.asarray(relative_position, dtype=np.int32)
    if bidirectional:
        num_buckets //= 2
        ret += (n < 0).astype(np.int32) * num_buckets
        n = np.abs(n)
    else:
        n = np.maximum(n, 0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    with np.errstate(divide="ignore"):
        val_if_large = max_exact + (
            np.log(n.astype(np.float32) / max_exact + np.finfo(np.float32).eps)
            / np.log(max_distance / max_exact)
            * (num_buckets - max_exact)
        ).astype(np.int32)
    val_if_large = np.minimum(val_if_large, num_buckets - 1)
    return ret + np.where(is_small, n, val_if_large).astype(np.int32)


class RelativePositionBias(nnx.Module):
    """One learned scalar per (head, distance bucket), added to the attention logits.

    One table ``rel_embedding [num_heads, num_buckets]`` per stack, shared by all its layers.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        num_buckets: int = 32,
        max_distance: int = 128,
        bidirectional: bool,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.dtype = jnp.dtype(dtype)
        self.rel_embedding = nnx.Param(
            RELPOS_INIT(rngs.params(), (num_heads, num_buckets), jnp.float32)
        )

    def _buckets(self, relative_position: np.ndarray) -> np.ndarray:
        return relative_position_bucket(
            relative_position,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )

    def __call__(self, q_length: int, k_length: int) -> Array:
        """Bias ``[1, heads, q_length, k_length]`` for queries/keys at positions 0.. ."""
        relative = np.arange(k_length)[None, :] - np.arange(q_length)[:, None]
        table = self.rel_embedding[...].astype(self.dtype)
        return jnp.take(table, self._buckets(relative), axis=1)[None]

    def step(self, index: Array, k_length: int) -> Array:
        """Bias ``[1, heads, 1, k_length]`` for one query at (traced) position ``index``.

        Bucket ids are precomputed for every offset -(k_length-1)..(k_length-1) and the row is a
        dynamic slice of that vector, so decoding needs no log() on traced values.
        """
        offsets = np.arange(-(k_length - 1), k_length)
        buckets = jnp.asarray(self._buckets(offsets))
        row = jax.lax.dynamic_slice_in_dim(buckets, k_length - 1 - index, k_length)
        table = self.rel_embedding[...].astype(self.dtype)
        return jnp.take(table, row, axis=1)[None, :, None, :]


# --------------------------------------------------------------------------------------------
# Attention.
# --------------------------------------------------------------------------------------------

MASK_BIAS = -1e10
"""Logit bias of a masked-out key (T5X's value; finite so fully masked rows stay finite)."""


def make_attention_mask(query_valid: Array, key_valid: Array) -> Array:
    """``[batch, q]`` and ``[batch, k]`` booleans -> ``[batch, 1, q, k]`` (both valid)."""
    return jnp.logical_and(query_valid[:, None, :, None], key_valid[:, None, None, :])


def mask_to_bias(mask: Array, dtype: Any) -> Array:
    """Boolean mask -> additive logit bias (0 where attended, -1e10 where masked)."""
    return jnp.where(mask, jnp.asarray(0.0, dtype), jnp.asarray(MASK_BIAS, dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def broadcast_over_batch(bias: Array, batch: int) -> Array:
    """``bias [1, ...]`` broadcast to ``[batch, ...]``; its gradient sums over the batch as a
    matmul with a ones vector.

    Why: the relative position bias ``[1, h, l, l]`` is added to every example's logits, so
    its gradient is a sum of ``[b, h, l, l]`` over ``b``. XLA:CPU lowers that reduction over the
    leading axis to a strided loop (~18 ms for 32 x 4 x 128 x 128, ~5% of a bench step), while
    ``ones[b] @ g.reshape(b, -1)`` is a GEMV (~0.2 ms). Same sum, another summation order.
    """
    return jnp.broadcast_to(bias, (batch, *bias.shape[1:]))


def _broadcast_over_batch_fwd(bias: Array, batch: int) -> tuple[Array, None]:
    return broadcast_over_batch(bias, batch), None


def _broadcast_over_batch_bwd(batch: int, _: None, g: Array) -> tuple[Array]:
    ones = jnp.ones((batch,), g.dtype)
    total = jnp.dot(ones, g.reshape(batch, -1), preferred_element_type=jnp.float32)
    return (total.reshape(1, *g.shape[1:]).astype(g.dtype),)


broadcast_over_batch.defvjp(_broadcast_over_batch_fwd, _broadcast_over_batch_bwd)


def dot_product_attention(
    query: Array,
    key: Array,
    value: Array,
    mask: Array | None = None,
    bias: Array | None = None,
    *,
    dropout_rate: float = 0.0,
    rng: Array | None = None,
    float32_logits: bool = False,
) -> Array:
    """softmax(q k^T + bias + mask bias) v, unscaled (T5 folds 1/sqrt(d) into the query init).

    query ``[b, q, h, d]``, key/value ``[b, k, h, d]``; ``mask`` (bool, True = attend) and
    ``bias`` (additive, e.g. relative positions) broadcast to ``[b, h, q, k]``. They are kept
    apart so that XLA fuses both into the logits instead of materialising a ``[b, h, q, k]``
    bias per stack. Attention dropout, as in T5X, uses one mask for all query positions.
    """
    dtype = query.dtype
    if float32_logits:
        query, key = query.astype(jnp.float32), key.astype(jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key)
    if bias is not None:
        if bias.shape[0] == 1 and logits.shape[0] > 1:  # one table for the batch (relpos)
            bias = broadcast_over_batch(bias, logits.shape[0])  # for its faster gradient
        logits = logits + bias.astype(logits.dtype)
    if mask is not None:
        logits = logits + mask_to_bias(mask, logits.dtype)
    weights = jax.nn.softmax(logits).astype(dtype)
    weights = dropout(weights, dropout_rate, rng, broadcast_dims=(-2,))
    return jnp.einsum("bhqk,bkhd->bqhd", weights, value)


class KVCache(NamedTuple):
    """Projected keys and values ``[batch, length, heads, head_dim]`` of one attention layer."""

    key: Array
    value: Array


def prepend_prefix(
    kv: KVCache, prefix: KVCache, mask: Array | None, bias: Array | None
) -> tuple[KVCache, Array | None, Array | None]:
    """Keys/values ``[P_k; K]``, ``[P_v; V]`` and the mask/bias widened by P columns.

    Prefix-tuning as HINT does it (allenai/hyper-task-descriptions ``lora.py``): the prefix
    columns are always attended (mask True) and get bias 0, i.e. no relative-position bias;
    upstream prepends ``jnp.empty`` to the bias, which is zeros in JAX. ``prefix`` is
    ``[b, P, h, d]``; ``mask`` ``[b|1, 1, q, k]`` and ``bias`` ``[1, h, q, k]`` keep their
    leading dims, so the relpos bias still broadcasts over the batch.
    """
    num = prefix.key.shape[1]
    join = lambda p, x: jnp.concatenate([p.astype(x.dtype), x], axis=1)
    kv = KVCache(join(prefix.key, kv.key), join(prefix.value, kv.value))
    widen = [(0, 0), (0, 0), (0, 0), (num, 0)]
    if mask is not None:
        mask = jnp.pad(mask, widen, constant_values=True)
    if bias is not None:
        bias = jnp.pad(bias, widen, constant_values=0)
    return kv, mask, bias


class Attention(nnx.Module):
    """Multi-head attention with T5X's kernels ``query``, ``key``, ``value``, ``out``.

    Kernels are 2-D: q/k/v ``[d_model, heads * head_dim]``, out ``[heads * head_dim, d_model]``.
    Three ways to call it: full (`__call__`), against precomputed keys/values (`attend_cached`,
    e.g. cross-attention while decoding), and one decoding step that appends to a self-attention
    cache (`step`).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        head_dim: int,
        *,
        dropout_rate: float = 0.0,
        float32_logits: bool = False,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout_rate = dropout_rate
        self.float32_logits = float32_logits
        inner = num_heads * head_dim
        self.query = Dense(d_model, inner, kernel_init=query_init(head_dim), dtype=dtype, rngs=rngs)
        self.key = Dense(d_model, inner, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)
        self.value = Dense(d_model, inner, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)
        self.out = Dense(inner, d_model, kernel_init=ATTENTION_INIT, dtype=dtype, rngs=rngs)

    def _heads(self, x: Array) -> Array:
        return x.reshape(*x.shape[:-1], self.num_heads, self.head_dim)

    def key_value(self, inputs_kv: Array) -> KVCache:
        """Project ``[b, k, d_model]`` to keys and values (reusable across decoding steps)."""
        return KVCache(self._heads(self.key(inputs_kv)), self._heads(self.value(inputs_kv)))

    def attend_cached(
        self,
        inputs_q: Array,
        kv: KVCache,
        mask: Array | None = None,
        bias: Array | None = None,
        *,
        rng: Array | None = None,
        prefix_kv: KVCache | None = None,
    ) -> Array:
        """Attention of ``[b, q, d_model]`` queries over already projected keys/values.

        ``prefix_kv`` (``[b, P, h, d]``, e.g. HINT's generated prefixes) is prepended to the
        keys and values, attended without mask or bias (`prepend_prefix`). None: plain attention,
        the very same ops as before prefixes existed.
        """
        if prefix_kv is not None:
            kv, mask, bias = prepend_prefix(kv, prefix_kv, mask, bias)
        x = dot_product_attention(
            self._heads(self.query(inputs_q)), kv.key, kv.value, mask, bias,
            dropout_rate=self.dropout_rate, rng=rng, float32_logits=self.float32_logits,
        )
        return self.out(x.reshape(*x.shape[:-2], -1))

    def __call__(
        self,
        inputs_q: Array,
        inputs_kv: Array,
        mask: Array | None = None,
        bias: Array | None = None,
        *,
        rng: Array | None = None,
        prefix_kv: KVCache | None = None,
    ) -> Array:
        """``[b, q, d_model]`` x ``[b, k, d_model]`` -> ``[b, q, d_model]``.

        ``mask``: bool ``[b|1, 1, q, k]``, True = may attend; ``bias``: additive ``[1, h, q, k]``.
        ``prefix_kv``: optional keys/values prepended as in `attend_cached`.
        """
        return self.attend_cached(
            inputs_q, self.key_value(inputs_kv), mask, bias, rng=rng, prefix_kv=prefix_kv
        )

    def step(
        self,
        inputs: Array,
        cache: KVCache,
        index: Array,
        mask: Array,
        bias: Array | None = None,
        *,
        prefix_kv: KVCache | None = None,
    ) -> tuple[Array, KVCache]:
        """One self-attention decoding step.

        ``inputs [b, 1, d_model]`` is the token at position ``index``; its key and value are
        written into ``cache`` (``[b, max_length, h, d]``) at ``index``, then the query attends
        over the whole cache. ``mask [.., 1, max_length]`` must exclude positions > index.
        ``prefix_kv`` is prepended to the cache at every step (HINT's decoding), never written.
        """
        new = self.key_value(inputs)
        write = lambda buffer, x: jax.lax.dynamic_update_slice_in_dim(
            buffer, x.astype(buffer.dtype), index, 1
        )
        cache = KVCache(write(cache.key, new.key), write(cache.value, new.value))
        return self.attend_cached(inputs, cache, mask, bias, prefix_kv=prefix_kv), cache


# --------------------------------------------------------------------------------------------
# MLP.
# --------------------------------------------------------------------------------------------

_ACTIVATIONS = {
    "relu": jax.nn.relu,
    # T5 v1.1 / flax ``nn.gelu`` default: the tanh approximation (Hugging Face "gelu_new").
    "gated-gelu": lambda x: jax.nn.gelu(x, approximate=True),
    "swiglu": jax.nn.silu,
    # Primer (So et al. 2021).
    "squared-relu": lambda x: jnp.square(jax.nn.relu(x)),
}
GATED_MLPS = frozenset({"gated-gelu", "swiglu"})


class Mlp(nnx.Module):
    """Feed-forward: ``wo(dropout(act(wi x)))``, or gated ``wo(dropout(act(wi_0 x) * wi_1 x))``.

    Kinds: ``relu`` (T5 v1.0), ``gated-gelu`` (T5 v1.1), ``swiglu``, ``squared-relu`` (Primer).
    Names follow T5X ``MlpBlock``: one input kernel is ``wi``; gated ones are ``wi_0``/``wi_1``.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        *,
        kind: str = "relu",
        dropout_rate: float = 0.0,
        kernel_init: Initializer = MLP_INIT,
        dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if kind not in _ACTIVATIONS:
            raise ValueError(f"unknown MLP kind {kind!r}; allowed: {', '.join(_ACTIVATIONS)}")
        self.kind = kind
        self.dropout_rate = dropout_rate
        dense = lambda i, o: Dense(i, o, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        if kind in GATED_MLPS:
            self.wi_0 = dense(d_model, d_ff)
            self.wi_1 = dense(d_model, d_ff)
        else:
            self.wi = dense(d_model, d_ff)
        self.wo = dense(d_ff, d_model)

    def __call__(self, x: Array, *, rng: Array | None = None) -> Array:
        act = _ACTIVATIONS[self.kind]
        if self.kind in GATED_MLPS:
            h = act(self.wi_0(x)) * self.wi_1(x)
        else:
            h = act(self.wi(x))
        return self.wo(dropout(h, self.dropout_rate, rng, broadcast_dims=(-2,)))


class ParallelAdapter(NamedTuple):
    """Per-example adapter weights (HINT generates them): ``down [b, d, a]``, ``up [b, a, d]``,
    ``bias_down [b, a]``, ``bias_up [b, d]``."""

    down: Array
    up: Array
    bias_down: Array
    bias_up: Array


def parallel_adapter(h: Array, adapter: ParallelAdapter) -> Array:
    """``gelu_tanh(h W_d + b_d) W_u + b_u`` per example, for ``h [b, l, d]`` (the pre-MLP
    LayerNorm output): HINT's adapter, added beside the FFN, with no dropout on this branch
    (upstream ``hyper_network.py``: ``lax.batch_matmul`` + ``nn.gelu``, whose default is tanh)."""
    dtype = h.dtype
    z = jnp.einsum("bld,bda->bla", h, adapter.down.astype(dtype))
    z = jax.nn.gelu(z + adapter.bias_down.astype(dtype)[:, None], approximate=True)
    return jnp.einsum("bla,bad->bld", z, adapter.up.astype(dtype)) + adapter.bias_up.astype(
        dtype
    )[:, None]


# --------------------------------------------------------------------------------------------
# Flat parameter dictionaries ('/'-joined paths, T5X style).
# --------------------------------------------------------------------------------------------


def _path(path: tuple) -> str:
    return "/".join(str(part) for part in path)


def flat_params(model_or_params: nnx.Module | nnx.State) -> dict[str, Array]:
    """``{'encoder/layers_0/attention/query/kernel': array, ...}`` for every ``nnx.Param``.

    Accepts a module or the params ``State`` of ``nnx.split(model, nnx.Param, ...)`` (then it is
    pure and can run under jit). Keys are sorted.
    """
    state = model_or_params
    if isinstance(model_or_params, nnx.Module):
        state = nnx.state(model_or_params, nnx.Param)
    return dict(sorted((_path(path), var.get_value()) for path, var in state.flat_state()))


def _check_flat(expected: Mapping[str, Any], given: Mapping[str, Any]) -> None:
    def names(keys: list[str]) -> str:
        shown = ", ".join(keys[:10])
        return shown + (f", ... ({len(keys) - 10} more)" if len(keys) > 10 else "")

    problems = []
    missing = sorted(set(expected) - set(given))
    extra = sorted(set(given) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing: {names(missing)}")
    if extra:
        problems.append(f"{len(extra)} unexpected: {names(extra)}")
    for key in sorted(set(expected) & set(given)):
        want, got = tuple(np.shape(expected[key])), tuple(np.shape(given[key]))
        if want != got:
            problems.append(f"{key}: expected shape {want}, got {got}")
    if problems:
        raise ValueError("parameter names/shapes do not match the model: " + "; ".join(problems))


def flat_to_state(flat: Mapping[str, Any], like: nnx.State) -> nnx.State:
    """A new params ``State`` shaped like ``like``, with values from ``flat`` (pure; jit-safe).

    Values are cast to the dtype of the matching parameter in ``like``. Raises ``ValueError``
    listing missing, unexpected and mis-shaped names.
    """
    variables = list(like.flat_state())
    _check_flat({_path(path): var.get_value() for path, var in variables}, flat)
    return nnx.from_flat_state(
        [
            (path, var.replace(jnp.asarray(flat[_path(path)], dtype=var.get_value().dtype)))
            for path, var in variables
        ]
    )


def load_flat_params(model: nnx.Module, flat: Mapping[str, Any]) -> None:
    """Set every ``nnx.Param`` of ``model`` (in place) from a flat '/'-joined dict.

    The names and shapes must match `flat_params(model)` exactly; otherwise ``ValueError``
    lists every missing, unexpected and mis-shaped name.
    """
    nnx.update(model, flat_to_state(flat, nnx.state(model, nnx.Param)))
