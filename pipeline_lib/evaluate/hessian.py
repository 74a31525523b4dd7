"""Trace of the Hessian of a pre-training loss: Hutchinson and Fisher estimators (Liu et al. 2023).

Liu et al. measure flatness as tr(H), H = the Hessian of the MLM pre-training loss at the trained
parameters (liu2023 §4.1-4.2). Two estimators exist, and the sources disagree on which was used:
the released ``calculate_hessian.py`` runs Hutchinson with Gaussian probes on the training loss
(true labels); the paper (App. B.1) describes the Fisher trace with labels sampled from the model.
Both are here, behind one interface, so a run can report either or both.

The loss
--------
A batch holds examples with loss positions j (an MLM sentence has 1-5 masked positions; padded
slots carry weight 0). With weights w_j >= 0 and W = sum_j w_j, the loss of a batch is the
**mean over weighted positions** (academic-budget-bert's MLM loss, the released script's)::

    L_B(theta) = (1/W) sum_j w_j l_j(theta),   l_j = -log p_theta(y_j | x_j)

Both estimators target the expectation over batches of a trace for L_B; a sample uses a fresh
batch from the caller's iterator, so the estimate averages over data as the released script
does (a fresh random minibatch of 128 per probe).

1. Hutchinson: tr(H)
--------------------
tr(H_B) = E_v[v^T H_B v] for any probe v with E[v v^T] = I: Rademacher (+-1 entries; the
smaller variance: 2 sum_{i != k} H_ik^2) or Gaussian N(0, I) (the released script's choice;
variance 2 ||H||_F^2). One sample = one minibatch, one probe, one Hessian-vector product, done
forward-over-reverse (``jax.jvp`` of ``jax.grad``), so no Hessian is materialised and a probe
costs about 2-3 gradients. **Unbiased** for E_B tr(H_B) at any parameters, including away from
a minimum, where H may be indefinite and samples negative.

2. Fisher trace: tr(F)
----------------------
With labels drawn from the model's own predictive distribution y ~ p_theta(. | x_j),

    F_B = (1/W) sum_j w_j E_{y ~ p_theta(.|x_j)} [g_j(y) g_j(y)^T],
    g_j(y) = grad log p_theta(y | x_j)
    tr(F_B) = (1/W) sum_j w_j E_y ||g_j(y)||^2.

Gauss-Newton identity: for softmax cross-entropy, E_{y ~ p_theta}[grad^2 l_j] = F_j at *every*
theta (the residual term sum_k (p_k - 1[y=k]) grad^2 z_k has zero mean). So tr(F) equals the
Hessian trace of the expected loss whenever the labels' distribution equals the model's -- in
particular at a global minimiser of the population loss (the saturation regime of the paper,
Lemma 4.2), where the model's conditionals are the true ones. Away from it the two differ:
tr(F) >= 0 always, while tr(H) with true labels includes the residual term.

Per-example gradients, several positions per example. A sentence's masked positions are
predicted independently given the same corrupted input, so their sampled labels are
independent and E[g_j . g_k] = E[g_j] . E[g_k] = 0 for j != k (the score has zero mean). Hence
one gradient per *example* e of the sum over its positions is enough:

    G_e = grad sum_{j in e} sqrt(w_j) log p_theta(y_j | x_e),
    E ||G_e||^2 = sum_{j in e} w_j E ||g_j||^2

(sqrt(w) makes non-binary weights come out as w; for 0/1 weights it is w), and one sample is

    (1/W) sum_e ||G_e||^2     -- unbiased for tr(F_B), matching the Hessian of the mean loss L_B.

The G_e are per-example gradients (``jax.vmap`` of ``jax.grad`` over the batch axis, optionally
chunked with ``jax.lax.map(batch_size=...)`` to bound memory at chunk x parameters). Squaring
the gradient of the batch-mean loss instead would estimate ~tr(F)/B: biased by the batch size.
A Fisher sample costs about one training-step backward pass, and averages B examples where a
Hutchinson sample averages one probe, so it needs far fewer samples.

Which one to report (the reference is unsure)
---------------------------------------------
The paper's tr(H) figures (Table 2, Fig. 3, Fig. 5) cannot be traced to one estimator: the text
says Fisher with sampled labels, the released code Hutchinson with true labels. The two agree
only near saturation (see above), which is where the paper measures. Recommended: the Fisher
trace as the headline (the paper's stated method, never negative, and a sample averages a whole
batch: on the laptop BERT one Fisher sample of 128 examples costs ~1.3 training steps and one
Hutchinson probe ~2.1, `benchmarks/hessian_probe.py`), Hutchinson as the cross-check that
reproduces the released script. Which to run is the caller's (config's) choice.

Stopping rule (both)
--------------------
Samples are drawn one by one (sample i uses the next batch and the key ``fold_in(key, i)``)
until the standard error of their mean, std(ddof=1)/sqrt(n), is at most ``rel_tol * |mean|``
with n >= ``min_samples``, or n reaches ``max_samples`` (the released script: 50,000 samples,
no rule). The result `TraceEstimate` keeps every sample. Same key + same batches -> the same
samples.

BERT MLM
--------
`split_hessian_params` picks the parameters, as the released script: every parameter except the
[CLS] pooler (not on the MLM path: its Hessian block is zero) and the MLM output bias
``mlm_head/bias`` (excluded by the script; it adds a positive PSD block to tr(H)). The tied
decoder is the word embedding, counted once. Classifier/probe heads (``num_labels > 0``) are
off the MLM path too and excluded. `bert_mlm_loss_and_logits` builds the ``loss_fn`` and
``logits_fn`` for batches of MLM instances (``input_ids, input_mask, masked_lm_positions,
masked_lm_ids, masked_lm_weights``, as `pipeline_lib.pcfg.mlm` writes them), dropout off
(``model.eval()`` in the script).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.flatten_util import ravel_pytree

from pipeline_lib.models.bert import bert_mlm_logits
from pipeline_lib.train.optim import token_cross_entropy

log = logging.getLogger(__name__)

PyTree = Any
Batch = Mapping[str, Any]
LossFn = Callable[[PyTree, Batch], jax.Array]  # (params, batch) -> scalar mean loss
LogitsFn = Callable[[PyTree, Batch], jax.Array]  # (params, batch) -> logits [..., vocab]
SampleFn = Callable[[PyTree, Batch, jax.Array], jax.Array]  # (params, batch, key) -> scalar
Probe = Literal["rademacher", "gaussian"]
PROBES = ("rademacher", "gaussian")

#: MLM batch keys (pipeline_lib.pcfg.mlm.MlmInstances).
MLM_WEIGHTS_KEY = "masked_lm_weights"


# --- result and stopping rule --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """A Monte-Carlo trace estimate: mean of `samples`, its standard error, and the samples."""

    mean: float
    stderr: float  # std(samples, ddof=1) / sqrt(num_samples)
    num_samples: int
    samples: np.ndarray  # float64 [num_samples], in draw order

    @classmethod
    def from_samples(cls, samples: Iterable[float]) -> TraceEstimate:
        values = np.asarray(list(samples), dtype=np.float64)
        if values.size < 1:
            raise ValueError("a trace estimate needs at least one sample")
        stderr = float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.inf
        return cls(float(values.mean()), stderr, int(values.size), values)

    @property
    def relative_stderr(self) -> float:
        return self.stderr / abs(self.mean) if self.mean else math.inf

    def as_dict(self) -> dict[str, float | int]:
        """The summary for a metrics JSON (the samples are left out)."""
        return {"trace": self.mean, "stderr": self.stderr, "num_samples": self.num_samples}


def check_stopping_rule(min_samples: int, max_samples: int, rel_tol: float) -> None:
    """Raise ValueError naming the argument if the stopping rule cannot be honoured."""
    if not isinstance(min_samples, int) or isinstance(min_samples, bool) or min_samples < 2:
        raise ValueError(f"min_samples: {min_samples!r} must be an integer >= 2 (a standard "
                         "error needs two samples)")
    if (not isinstance(max_samples, int) or isinstance(max_samples, bool)
            or max_samples < min_samples):
        raise ValueError(f"max_samples: {max_samples!r} must be an integer >= min_samples "
                         f"({min_samples})")
    if not isinstance(rel_tol, (int, float)) or isinstance(rel_tol, bool) or not (
        math.isfinite(rel_tol) and rel_tol >= 0
    ):
        raise ValueError(f"rel_tol: {rel_tol!r} must be a finite number >= 0")


def run_trace_estimator(
    sample_fn: SampleFn,
    params: PyTree,
    batches: Iterable[Batch],
    key: jax.Array,
    *,
    min_samples: int = 10,
    max_samples: int = 1000,
    rel_tol: float = 0.05,
    name: str = "trace",
    log_every: int = 100,
) -> TraceEstimate:
    """Draw ``sample_fn(params, next(batches), fold_in(key, i))`` for i = 0, 1, ... until the rule.

    Stops after sample n when n >= min_samples and stderr <= rel_tol * |mean|, or at
    n = max_samples (rel_tol 0: always max_samples, unless the samples are all equal). Raises
    ValueError if `batches` runs out first and FloatingPointError on a NaN/Inf sample.
    """
    check_stopping_rule(min_samples, max_samples, rel_tol)
    iterator = iter(batches)
    samples: list[float] = []
    mean = m2 = 0.0  # Welford: the rule is checked after every sample in O(1)
    for i in range(max_samples):
        try:
            batch = next(iterator)
        except StopIteration:
            raise ValueError(
                f"{name}: the batch iterator ran out after {i} samples (min_samples "
                f"{min_samples}, max_samples {max_samples}); pass an endless iterator, e.g. "
                "itertools.cycle or a shuffling sampler"
            ) from None
        value = float(sample_fn(params, batch, jax.random.fold_in(key, i)))
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{name}: sample {i} is {value}: the loss or its derivatives are not finite at "
                "these parameters on this batch (or the batch has no weighted loss position)"
            )
        samples.append(value)
        n = i + 1
        delta = value - mean
        mean += delta / n
        m2 += delta * (value - mean)
        stderr = math.sqrt(m2 / (n - 1) / n) if n > 1 else math.inf
        if log_every and n % log_every == 0:
            log.info("%s: %d samples, mean %.6g, stderr %.3g", name, n, mean, stderr)
        if n >= min_samples and stderr <= rel_tol * abs(mean):
            break
    return TraceEstimate.from_samples(samples)


# --- Hutchinson ----------------------------------------------------------------------------


def _check_probe(probe: str) -> None:
    if probe not in PROBES:
        raise ValueError(f"probe: {probe!r} is not one of {', '.join(PROBES)}")


def draw_probe(key: jax.Array, params: PyTree, probe: Probe = "rademacher") -> PyTree:
    """A probe v shaped like `params` with E[v v^T] = I: +-1 entries, or N(0, 1) entries."""
    _check_probe(probe)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    draw = jax.random.rademacher if probe == "rademacher" else jax.random.normal
    return jax.tree.unflatten(
        treedef, [draw(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves)]
    )


def hessian_vector_product(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree) -> PyTree:
    """H v for H = the Hessian of ``loss_fn(., batch)`` at `params`: forward-over-reverse."""
    grad = jax.grad(lambda p: loss_fn(p, batch))
    return jax.jvp(grad, (params,), (v,))[1]


def _tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    products = [
        jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    ]
    return jnp.sum(jnp.stack(products))


def probe_quadratic_form(loss_fn: LossFn, params: PyTree, batch: Batch, v: PyTree) -> jax.Array:
    """v^T H v (float32 scalar), one HVP."""
    return _tree_vdot(v, hessian_vector_product(loss_fn, params, batch, v))


def _jit(fn: Callable, compiler_options: Mapping[str, Any] | None) -> Callable:
    return jax.jit(fn, compiler_options=dict(compiler_options) if compiler_options else None)


def make_hutchinson_sample(
    loss_fn: LossFn,
    probe: Probe = "rademacher",
    *,
    compiler_options: Mapping[str, Any] | None = None,
) -> SampleFn:
    """Jitted ``(params, batch, key) -> v^T H v`` with v = `draw_probe(key, params, probe)`.

    ``compiler_options``: XLA options, as `TrainConfig.compiler_options` (e.g.
    ``{"xla_cpu_use_fusion_emitters": False}`` compiles toy models ~2.5x faster on CPU).
    """
    _check_probe(probe)

    def sample(params, batch, key):
        return probe_quadratic_form(loss_fn, params, batch, draw_probe(key, params, probe))

    return _jit(sample, compiler_options)


def hutchinson_trace(
    loss_fn: LossFn,
    params: PyTree,
    batches: Iterable[Batch],
    key: jax.Array,
    *,
    probe: Probe = "rademacher",
    min_samples: int = 10,
    max_samples: int = 1000,
    rel_tol: float = 0.05,
    compiler_options: Mapping[str, Any] | None = None,
) -> TraceEstimate:
    """tr(H) of the mean loss, one fresh batch and one fresh probe per sample (see module doc)."""
    check_stopping_rule(min_samples, max_samples, rel_tol)
    return run_trace_estimator(
        make_hutchinson_sample(loss_fn, probe, compiler_options=compiler_options),
        params, batches, key,
        min_samples=min_samples, max_samples=max_samples, rel_tol=rel_tol,
        name=f"hutchinson[{probe}]",
    )


# --- Fisher --------------------------------------------------------------------------------


def sample_model_labels(logits: jax.Array, key: jax.Array) -> jax.Array:
    """One label per position drawn from softmax(logits) (int32, logits' leading shape)."""
    return jax.random.categorical(key, logits.astype(jnp.float32), axis=-1).astype(jnp.int32)


def per_example_sq_grad_norms(
    logits_fn: LogitsFn,
    params: PyTree,
    batch: Batch,
    labels: jax.Array,
    *,
    weights_key: str = MLM_WEIGHTS_KEY,
    chunk_size: int | None = None,
) -> jax.Array:
    """||G_e||^2 per example e, G_e = grad sum_j sqrt(w_ej) log p(labels_ej | x_e)  -> [B].

    Every leaf of `batch` has the example axis first; `logits_fn` sees one example at a time as
    a batch of one and must return logits shaped ``batch[weights_key].shape[1:] + (vocab,)``
    after the leading 1. ``chunk_size``: examples per vectorised chunk (None: all at once).
    """

    def one(example, example_labels):
        weights = example[weights_key].astype(jnp.float32)

        def log_likelihood(p):
            logits = logits_fn(p, jax.tree.map(lambda x: x[None], example))
            if logits.shape[1:-1] != weights.shape:
                raise ValueError(
                    f"logits_fn returned logits {logits.shape} for one example; expected "
                    f"(1, {', '.join(map(str, weights.shape))}{', ' if weights.shape else ''}"
                    f"vocab) to match batch[{weights_key!r}]"
                )
            log_p = jax.nn.log_softmax(logits[0].astype(jnp.float32), axis=-1)
            picked = jnp.take_along_axis(log_p, example_labels[..., None], axis=-1)[..., 0]
            return jnp.sum(jnp.sqrt(weights) * picked)

        grads = jax.grad(log_likelihood)(params)
        return sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads))

    if chunk_size is None:
        return jax.vmap(one)(batch, labels)
    return jax.lax.map(lambda args: one(*args), (batch, labels), batch_size=chunk_size)


def make_fisher_sample(
    logits_fn: LogitsFn,
    *,
    weights_key: str = MLM_WEIGHTS_KEY,
    chunk_size: int | None = None,
    compiler_options: Mapping[str, Any] | None = None,
) -> SampleFn:
    """Jitted ``(params, batch, key) -> (1/W) sum_e ||G_e||^2`` with labels ~ the model (key)."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size: {chunk_size!r} must be a positive integer or None")

    def sample(params, batch, key):
        logits = jax.lax.stop_gradient(logits_fn(params, batch))
        labels = sample_model_labels(logits, key)
        norms = per_example_sq_grad_norms(
            logits_fn, params, batch, labels, weights_key=weights_key, chunk_size=chunk_size
        )
        return jnp.sum(norms) / jnp.sum(batch[weights_key].astype(jnp.float32))

    return _jit(sample, compiler_options)


def fisher_trace(
    logits_fn: LogitsFn,
    params: PyTree,
    batches: Iterable[Batch],
    key: jax.Array,
    *,
    weights_key: str = MLM_WEIGHTS_KEY,
    chunk_size: int | None = None,
    min_samples: int = 10,
    max_samples: int = 1000,
    rel_tol: float = 0.05,
    compiler_options: Mapping[str, Any] | None = None,
) -> TraceEstimate:
    """tr(F) normalised as the Hessian of the mean-over-weighted-positions loss (module doc)."""
    check_stopping_rule(min_samples, max_samples, rel_tol)

    def checked(batches):
        for number, batch in enumerate(batches):
            if weights_key not in batch:
                raise ValueError(f"fisher_trace: batch {number} has no {weights_key!r} "
                                 f"(keys: {', '.join(sorted(batch))})")
            yield batch

    return run_trace_estimator(
        make_fisher_sample(
            logits_fn, weights_key=weights_key, chunk_size=chunk_size,
            compiler_options=compiler_options,
        ),
        params, checked(batches), key,
        min_samples=min_samples, max_samples=max_samples, rel_tol=rel_tol, name="fisher",
    )


# --- exact reference (tests) ---------------------------------------------------------------


def exact_trace(
    loss_fn: LossFn,
    params: PyTree,
    batch: Batch,
    *,
    max_params: int = 20_000,
    compiler_options: Mapping[str, Any] | None = None,
) -> float:
    """tr of the full Hessian of ``loss_fn(., batch)`` (jax.hessian on the raveled params).

    Materialises a P x P matrix: for tests and tiny models only (P <= max_params).
    """
    flat, unravel = ravel_pytree(params)
    if flat.size > max_params:
        raise ValueError(f"exact_trace: {flat.size} parameters; the {flat.size} x {flat.size} "
                         f"Hessian is too large (max_params {max_params}); use hutchinson_trace")
    hessian = _jit(jax.hessian(lambda f, b: loss_fn(unravel(f), b)), compiler_options)(flat, batch)
    return float(jnp.trace(hessian))


# --- the project's BERT --------------------------------------------------------------------

#: Parameters left out of the trace (see the module doc): never on the MLM loss path, or (the
#: output bias) excluded by the released calculate_hessian.py.
HESSIAN_EXCLUDED_PREFIXES = ("pooler/", "classifier/", "probe/")
HESSIAN_EXCLUDED_NAMES = ("mlm_head/bias",)


def is_excluded_from_hessian(path: tuple, _value: Any = None) -> bool:
    """An nnx filter: True for the BERT parameters the trace leaves out."""
    name = "/".join(str(part) for part in path)
    return name in HESSIAN_EXCLUDED_NAMES or name.startswith(HESSIAN_EXCLUDED_PREFIXES)


def split_hessian_params(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """``graphdef, params, rest``: the parameters the trace is taken over, and the others."""
    graphdef, rest, params = nnx.split(model, is_excluded_from_hessian, ...)
    return graphdef, params, rest


def bert_mlm_loss_and_logits(
    graphdef: nnx.GraphDef, rest: nnx.State
) -> tuple[LossFn, LogitsFn]:
    """``(loss_fn, logits_fn)`` over the `split_hessian_params` params, for MLM instance batches.

    logits_fn(params, batch) -> float32 logits ``[b, max_predictions, vocab]`` at
    ``masked_lm_positions`` (weights ``masked_lm_weights``); loss_fn(params, batch) -> the mean
    cross-entropy of ``masked_lm_ids`` over the weighted positions. Dropout is off.
    """

    def logits_fn(params, batch):
        return bert_mlm_logits(
            graphdef, (params, rest), batch["input_ids"], batch["input_mask"],
            masked_positions=batch["masked_lm_positions"], deterministic=True,
        )

    def loss_fn(params, batch):
        nll_sum, aux = token_cross_entropy(
            logits_fn(params, batch), batch["masked_lm_ids"], batch[MLM_WEIGHTS_KEY]
        )
        return nll_sum / aux["num_tokens"]

    return loss_fn, logits_fn


__all__ = [
    "HESSIAN_EXCLUDED_NAMES",
    "HESSIAN_EXCLUDED_PREFIXES",
    "PROBES",
    "TraceEstimate",
    "bert_mlm_loss_and_logits",
    "check_stopping_rule",
    "draw_probe",
    "exact_trace",
    "fisher_trace",
    "hessian_vector_product",
    "hutchinson_trace",
    "is_excluded_from_hessian",
    "make_fisher_sample",
    "make_hutchinson_sample",
    "per_example_sq_grad_norms",
    "probe_quadratic_form",
    "run_trace_estimator",
    "sample_model_labels",
    "split_hessian_params",
]
