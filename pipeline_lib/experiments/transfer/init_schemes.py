"""Wu et al. (2022) initialisation schemes (Table 2) and the pre-attention LayerNorm init (Table 3).

Everything here is pure numpy over *flat* parameter dicts (``{'encoder/layers_0/attention/query/
kernel': array, ...}``, as `pipeline_lib.models.flat_params` and `train.checkpoint.flatten_params`
produce), so it is independent of NNX and tested without a model. The caller builds a freshly
initialised model, flattens it, calls `apply_init_scheme`, and loads the result back
(`models.load_flat_params`); keys, shapes and dtypes of the result are those of ``fresh``.

What the schemes do (reference: wu2022 §5, ``_final_init_exps.py`` of the original code):

* ``random``: the fresh init unchanged. ``pretrained``: every pre-trained weight.
  ``pretrained_no_embed``: every pre-trained weight but the token embedding, which stays fresh
  (the original scripts' ``is_load_everything_but_embed``; the released scripts load all weights:
  the reference leaves open which one the paper reports, so both exist).
* ``<grouping>___<statistic>``: the pre-trained checkpoint is used **only for statistics**. The
  grouping (regexes with `re.match` semantics, exactly the original ones) splits parameter names
  into groups; each group's pre-trained tensors are pooled and summarised by their mean and
  *population* std (ddof=0). ``init_mean_std`` draws every member ~ N(mean, std);
  ``init_scale`` sets every member of a LayerNorm group (a name containing ``norm``) to the
  constant group mean and draws every other member ~ N(0, std). Parameters outside the grouping
  keep their fresh random init, and the token embedding always does.
* ``preattn_ln_<V>`` (Table 3): no checkpoint; the fresh init with all pre-attention LayerNorm
  scales (encoder self, decoder self, decoder cross: ``(encoder/.*pre_attention_layer)|
  (decoder/.*pre_self.*norm)`` and ``.*pre_cross``) set to the constant V.

Decisions where the reference is silent or the original is not reproducible:

* **Seeding.** The original draws from numpy's unseeded global RNG. Here every parameter's
  standard-normal draws come from ``default_rng(SeedSequence([seed, crc32(name)]))``: results do
  not depend on group or dict order, and two schemes with the same seed use the *same* standard
  normals for a parameter (common random numbers), so schemes differ only in their statistics.
* **T5 v1.1** (gated MLP ``wi_0``/``wi_1``/``wo``, untied ``decoder/logits_dense/kernel``). The
  gated kernels match ``.*mlp/`` like ``wi``/``wo`` do. The untied output kernel is treated like
  the token embedding (`VOCAB_PARAMS`): always fresh, also in ``pretrained_no_embed``. In v1.0 the
  output layer *is* the embedding, so the vocabulary-facing weights are fresh in every
  statistics scheme either way; the paper never ran v1.1 with a statistics scheme.
* **Layer counts.** ``per_layer_grouping`` loops over the layers the names contain instead of the
  original's hard-coded ``range(6)``, so tiny test models and the 8+8 layer v1.1 work.
* **Stricter than the original.** A grouping that should cover every non-vocabulary parameter
  (per_param, whole model, across layers, per layer) raises if a parameter is left out (the
  original asserted the count); a group that matches nothing, a group mixing LayerNorm scales
  with other weights, a checkpoint with other keys or shapes, and non-finite statistics raise
  `InitSchemeError` naming the parameter or group. The original picked the ``init_scale`` rule
  from the group's first name only; all groups here are homogeneous, and that is checked.
* **Memory.** Pooled statistics are computed tensor by tensor in float64 (two passes: mean, then
  squared deviations), never by concatenating a group: the whole-model kernel group of T5-small
  holds ~40M numbers.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np

Flat = Mapping[str, np.ndarray]
NamedGroups = list[tuple[str, list[str]]]


class InitSchemeError(ValueError):
    """An unknown scheme, or parameters/checkpoint that the scheme cannot be applied to."""


TOKEN_EMBEDDING = "token_embedder/embedding"
VOCAB_PARAMS: tuple[str, ...] = (TOKEN_EMBEDDING, "decoder/logits_dense/kernel")
"""Vocabulary-facing weights: never grouped, never set from statistics (see module docstring)."""

STATISTICS: tuple[str, ...] = ("init_mean_std", "init_scale")

# Scheme id -> README paper name. Order = the README's order (Table 2, then the appendix).
_STATISTIC_SCHEME_LABELS: dict[str, str] = {
    "per_param_grouping___init_mean_std": "Per Param Mean/SD",
    "per_param_grouping___init_scale": "Per Param Scale",
    "across_ALL_layer_AND_per_layer_grouping___init_scale": "Whole Model Scale",
    "preattnln_per_param_grouping___init_scale": "Pre-attn LN Per Param Scale",
    "across_ALL_layer_grouping___init_scale": "Across Layers Scale",
    "per_layer_grouping___init_scale": "Per Layer Scale",
    "premlpln_per_param_grouping___init_scale": "Pre-MLP LN Per Param Scale",
    "qkvo_per_param_grouping___init_scale": "Attention Per Param Scale",
    "mlp_per_param_grouping___init_scale": "MLP Per Param Scale",
}
_PLAIN_SCHEME_LABELS: dict[str, str] = {
    "random": "Random Init",
    "pretrained": "Pre-trained",
    "pretrained_no_embed": "Pre-trained (fresh token embedding)",
}

INIT_SCHEMES: tuple[str, ...] = (*_PLAIN_SCHEME_LABELS, *_STATISTIC_SCHEME_LABELS)
"""Every fixed scheme id. Table 3 ids (``preattn_ln_<V>``, see `preattn_ln_scheme`) come on top."""

PREATTN_LN_PREFIX = "preattn_ln_"
PREATTN_LN_PATTERNS: tuple[str, ...] = (
    r"(encoder/.*pre_attention_layer)|(decoder/.*pre_self.*norm)",  # original "pre_self_attn_ln"
    r".*pre_cross",  # original "pre_cross_attn_ln"
)


# --------------------------------------------------------------------------------------------
# Scheme ids.
# --------------------------------------------------------------------------------------------


def preattn_ln_scheme(value: float) -> str:
    """Table 3 id for pre-attention LN scales = ``value``, e.g. 0.4 -> ``"preattn_ln_0.4"``.

    The id uses ``repr(float(value))``: one canonical id per value, and it parses back exactly.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InitSchemeError(f"pre-attention LN value {value!r} must be a number")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise InitSchemeError(f"pre-attention LN value {value!r} must be a finite number > 0")
    return f"{PREATTN_LN_PREFIX}{value!r}"


def parse_preattn_ln_scheme(scheme: str) -> float | None:
    """The constant of a ``preattn_ln_<V>`` id; None for any other scheme id.

    Raises `InitSchemeError` for a malformed or non-canonical value (``preattn_ln_0.40``: the id
    names result directories, so each value must have exactly one id).
    """
    if not isinstance(scheme, str) or not scheme.startswith(PREATTN_LN_PREFIX):
        return None
    text = scheme[len(PREATTN_LN_PREFIX):]
    try:
        value = float(text)
    except ValueError:
        raise InitSchemeError(
            f"init scheme {scheme!r}: {text!r} is not a number (expected e.g. preattn_ln_0.4)"
        ) from None
    canonical = preattn_ln_scheme(value)  # also rejects inf, nan and values <= 0
    if canonical != scheme:
        raise InitSchemeError(f"init scheme {scheme!r}: write it as {canonical!r}")
    return value


def _grouping_and_statistic(scheme: str) -> tuple[str, str] | None:
    if scheme in _STATISTIC_SCHEME_LABELS:
        grouping, statistic = scheme.split("___")
        return grouping, statistic
    return None


def validate_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is a known id; otherwise raise naming every valid one."""
    if isinstance(scheme, str) and (
        scheme in INIT_SCHEMES or parse_preattn_ln_scheme(scheme) is not None
    ):
        return scheme
    raise InitSchemeError(
        f"unknown init scheme {scheme!r}; valid: {', '.join(INIT_SCHEMES)}, "
        f"or {PREATTN_LN_PREFIX}<value> (e.g. {preattn_ln_scheme(0.4)})"
    )


def needs_checkpoint(scheme: str) -> bool:
    """Whether `apply_init_scheme` needs pre-trained parameters for ``scheme``."""
    validate_scheme(scheme)
    return scheme != "random" and parse_preattn_ln_scheme(scheme) is None


def scheme_label(scheme: str) -> str:
    """The paper's (README's) name of a scheme, for table rows, e.g. "Per Param Mean/SD"."""
    validate_scheme(scheme)
    value = parse_preattn_ln_scheme(scheme)
    if value is not None:
        return f"Pre-attn LN = {value:g}"
    return {**_PLAIN_SCHEME_LABELS, **_STATISTIC_SCHEME_LABELS}[scheme]


# --------------------------------------------------------------------------------------------
# Groupings: names -> [(group name, member names)]. Regexes use re.match, as the original.
# --------------------------------------------------------------------------------------------


def _match(pattern: str, names: Sequence[str]) -> list[str]:
    regex = re.compile(pattern)
    return [n for n in names if regex.match(n)]


def _groupable(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if n not in VOCAB_PARAMS)


def _per_param(pattern: str | None) -> Callable[[Sequence[str]], NamedGroups]:
    def grouping(names: Sequence[str]) -> NamedGroups:
        chosen = _groupable(names) if pattern is None else _match(pattern, _groupable(names))
        if not chosen:
            raise InitSchemeError(f"no parameter name matches {pattern or 'anything'!r}")
        return [(n, [n]) for n in chosen]

    return grouping


def _whole_model(names: Sequence[str]) -> NamedGroups:
    names = _groupable(names)
    return [
        ("attention_and_mlp_kernels", _match(".*attention/", names) + _match(".*mlp/", names)),
        ("layer_norms", _match(".*norm", names)),
        ("relpos", _match(".*relpos", names)),
    ]


def _require(names: Sequence[str], wanted: list[str]) -> list[str]:
    missing = [w for w in wanted if w not in names]
    if missing:
        raise InitSchemeError(f"parameter {missing[0]!r} not found (the grouping needs it)")
    return wanted


def _across_all_layers(names: Sequence[str]) -> NamedGroups:
    names = _groupable(names)
    return [
        ("query", _match(".*query", names)),
        ("key", _match(".*key", names)),
        ("value", _match(".*value", names)),
        ("attention_out", _match(".*attention.*out", names)),
        ("mlp", _match(".*mlp/", names)),
        ("pre_mlp_layer_norms", _match(".*pre_mlp_layer_norm", names)),
        ("pre_attention_layer_norms", _match(".*attention_layer_norm", names)),
        # the original lists these two pairs by name, in this order
        ("final_norms", _require(
            names, ["encoder/encoder_norm/scale", "decoder/decoder_norm/scale"])),
        ("relpos", _require(
            names, ["decoder/relpos_bias/rel_embedding", "encoder/relpos_bias/rel_embedding"])),
    ]


_LAYER = re.compile(r"(encoder|decoder)/layers_(\d+)/")


def _per_layer(names: Sequence[str]) -> NamedGroups:
    names = _groupable(names)
    layers = {(m.group(1), int(m.group(2))) for n in names if (m := _LAYER.match(n))}
    out: NamedGroups = []
    for i in sorted({i for _, i in layers}):
        for stack in ("encoder", "decoder"):
            if (stack, i) not in layers:
                continue  # encoder and decoder depths may differ
            prefix = f"{stack}/layers_{i}/"  # trailing '/': layers_1 must not match layers_10
            out.append((f"{prefix}kernels",
                        _match(f"{prefix}.*attention/", names) + _match(f"{prefix}.*mlp/", names)))
            out.append((f"{prefix}layer_norms",
                        _match(f"{prefix}.*pre_mlp_layer_norm", names)
                        + _match(f"{prefix}.*attention_layer_norm", names)))
    out += [(n, [n]) for n in names if "layers" not in n]  # final norms, relpos: singletons
    return out


_GROUPINGS: dict[str, Callable[[Sequence[str]], NamedGroups]] = {
    "per_param_grouping": _per_param(None),
    "across_ALL_layer_AND_per_layer_grouping": _whole_model,
    "preattnln_per_param_grouping": _per_param(".*attention.*norm"),
    "across_ALL_layer_grouping": _across_all_layers,
    "per_layer_grouping": _per_layer,
    "premlpln_per_param_grouping": _per_param(".*mlp.*norm"),
    "qkvo_per_param_grouping": _per_param(".*attention/"),
    "mlp_per_param_grouping": _per_param(".*mlp/"),
}
GROUPINGS: tuple[str, ...] = tuple(_GROUPINGS)

# Groupings that must place every non-vocabulary parameter (the original asserts the count).
_COMPLETE_GROUPINGS = frozenset(
    {"per_param_grouping", "across_ALL_layer_AND_per_layer_grouping",
     "across_ALL_layer_grouping", "per_layer_grouping"}
)


def named_groups(grouping: str, names: Sequence[str]) -> NamedGroups:
    """``[(group name, [member names])]`` of ``grouping`` over parameter ``names``.

    ``grouping`` is a grouping id (`GROUPINGS`) or a full ``<grouping>___<statistic>`` scheme id.
    Per-parameter groups are named after their parameter. Raises `InitSchemeError` for an unknown
    grouping, an empty group, a parameter in two groups, a group mixing LayerNorm scales with
    other weights, or (complete groupings) a non-vocabulary parameter left out.
    """
    if isinstance(grouping, str) and "___" in grouping:
        grouping = validate_scheme(grouping).split("___")[0]
    if grouping not in _GROUPINGS:
        raise InitSchemeError(f"unknown grouping {grouping!r}; valid: {', '.join(GROUPINGS)}")
    out = _GROUPINGS[grouping](list(names))
    seen: dict[str, str] = {}
    for group, members in out:
        if not members:
            raise InitSchemeError(f"{grouping}: group {group!r} matches no parameter")
        if len({"norm" in m for m in members}) > 1:
            raise InitSchemeError(
                f"{grouping}: group {group!r} mixes LayerNorm scales and other weights"
            )
        for m in members:
            if m in seen:
                raise InitSchemeError(
                    f"{grouping}: parameter {m!r} is in groups {seen[m]!r} and {group!r}"
                )
            seen[m] = group
    if grouping in _COMPLETE_GROUPINGS:
        left_out = [n for n in _groupable(names) if n not in seen]
        if left_out:
            raise InitSchemeError(
                f"{grouping}: parameter {left_out[0]!r} is in no group "
                f"({len(left_out)} left out; is this a T5 with T5X names?)"
            )
    return out


def groups(scheme_grouping: str, names: Sequence[str]) -> list[list[str]]:
    """The member lists of `named_groups` (the original ``get_<grouping>`` functions)."""
    return [members for _, members in named_groups(scheme_grouping, names)]


def preattn_ln_names(names: Sequence[str]) -> list[str]:
    """The pre-attention LayerNorm scales that Table 3 sets (18 in T5-small)."""
    chosen = [n for n in sorted(names) if any(re.match(p, n) for p in PREATTN_LN_PATTERNS)]
    if not chosen:
        raise InitSchemeError(
            "no pre-attention LayerNorm scale found (expected names like "
            "'encoder/layers_0/pre_attention_layer_norm/scale')"
        )
    return chosen


def _scheme_groups(scheme: str, names: Sequence[str]) -> NamedGroups:
    """The groups whose values ``scheme`` sets from a source (checkpoint or constant)."""
    validate_scheme(scheme)
    split = _grouping_and_statistic(scheme)
    if split is not None:
        return named_groups(split[0], names)
    if parse_preattn_ln_scheme(scheme) is not None:
        return [(n, [n]) for n in preattn_ln_names(names)]
    if scheme == "pretrained":
        return [(n, [n]) for n in sorted(names)]
    if scheme == "pretrained_no_embed":
        return [(n, [n]) for n in sorted(names) if n not in VOCAB_PARAMS]
    return []  # random


# --------------------------------------------------------------------------------------------
# Numerics.
# --------------------------------------------------------------------------------------------


def pooled_mean_std(tensors: Sequence[np.ndarray]) -> tuple[float, float, int]:
    """Mean, population std (ddof=0) and element count of all elements of ``tensors``.

    Equal to ``np.mean``/``np.std`` of their concatenation, computed in float64 one tensor at a
    time (two passes) so that no pooled copy is made.
    """
    count = sum(int(np.size(t)) for t in tensors)
    if count == 0:
        raise InitSchemeError("cannot take statistics of an empty group")
    mean = sum(float(np.sum(np.asarray(t, np.float64))) for t in tensors) / count
    var = sum(float(np.sum(np.square(np.asarray(t, np.float64) - mean))) for t in tensors) / count
    return mean, math.sqrt(var), count


def standard_normal(seed: int, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """float64 N(0, 1) draws for parameter ``name``: a stream of its own, keyed by (seed, name)."""
    key = zlib.crc32(name.encode("utf-8"))
    return np.random.default_rng(np.random.SeedSequence([seed, key])).standard_normal(shape)


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InitSchemeError(f"init seed {seed!r} must be a non-negative integer")


def _check_pretrained(scheme: str, fresh: Flat, pretrained: Flat | None) -> Flat:
    if pretrained is None:
        raise InitSchemeError(f"init scheme {scheme!r} needs pre-trained parameters (got None)")
    missing = sorted(set(fresh) - set(pretrained))
    if missing:
        raise InitSchemeError(
            f"init scheme {scheme!r}: pre-trained parameters lack {missing[0]!r} "
            f"({len(missing)} missing): different architecture?"
        )
    extra = sorted(set(pretrained) - set(fresh))
    if extra:
        raise InitSchemeError(
            f"init scheme {scheme!r}: pre-trained parameter {extra[0]!r} is not in the model "
            f"({len(extra)} unexpected): different architecture?"
        )
    return pretrained


def _check_shape(scheme: str, name: str, fresh: Flat, pretrained: Flat) -> np.ndarray:
    source = np.asarray(pretrained[name])
    if source.shape != np.shape(fresh[name]):
        raise InitSchemeError(
            f"init scheme {scheme!r}: pre-trained {name!r} has shape {source.shape}, "
            f"the model has {tuple(np.shape(fresh[name]))}"
        )
    return source


def apply_init_scheme(
    scheme: str, fresh: Flat, pretrained: Flat | None, seed: int
) -> dict[str, np.ndarray]:
    """A new flat dict with ``fresh``'s keys, shapes and dtypes, initialised by ``scheme``.

    ``fresh`` is the model's default random init; parameters the scheme does not set are copied
    from it. ``pretrained`` (same keys and shapes) is required unless `needs_checkpoint` is
    False, and is read only, as is ``fresh``. ``seed`` keys every random draw (see module
    docstring). Raises `InitSchemeError` naming the scheme, parameter or group at fault.
    """
    validate_scheme(scheme)
    _check_seed(seed)
    if not fresh:
        raise InitSchemeError(f"init scheme {scheme!r}: no fresh parameters given")
    out = {name: np.array(value, copy=True) for name, value in fresh.items()}
    dtypes = {name: value.dtype for name, value in out.items()}

    ln_value = parse_preattn_ln_scheme(scheme)
    if ln_value is not None:
        for name in preattn_ln_names(list(out)):
            out[name] = np.full(out[name].shape, ln_value, dtypes[name])
        return out
    if scheme == "random":
        return out

    pretrained = _check_pretrained(scheme, fresh, pretrained)
    split = _grouping_and_statistic(scheme)
    if split is None:  # pretrained / pretrained_no_embed: copy weights
        for _, (name,) in _scheme_groups(scheme, list(out)):
            out[name] = _check_shape(scheme, name, fresh, pretrained).astype(dtypes[name])
        return out

    _, statistic = split
    for group, members in _scheme_groups(scheme, list(out)):
        sources = [_check_shape(scheme, m, fresh, pretrained) for m in members]
        mean, std, _ = pooled_mean_std(sources)
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise InitSchemeError(
                f"init scheme {scheme!r}: group {group!r} has non-finite pre-trained statistics "
                f"(mean {mean}, std {std})"
            )
        layer_norm = "norm" in members[0]  # groups are homogeneous (checked by named_groups)
        for m in members:
            shape = out[m].shape
            if statistic == "init_scale" and layer_norm:
                value = np.full(shape, mean)
            elif statistic == "init_scale":
                value = std * standard_normal(seed, m, shape)
            else:  # init_mean_std
                value = mean + std * standard_normal(seed, m, shape)
            out[m] = value.astype(dtypes[m])
    return out


def group_statistics(scheme: str, params: Flat) -> list[dict]:
    """Statistics, in ``params``, of each group that ``scheme`` sets: dicts with keys "group",
    "members", "mean", "std" and "size".

    Apply it to the source checkpoint and to `apply_init_scheme`'s result to compare them
    (population std; ``size`` = number of elements). ``random`` sets nothing: an empty list.
    """
    rows = []
    for group, members in _scheme_groups(scheme, list(params)):
        mean, std, size = pooled_mean_std([params[m] for m in members])
        rows.append({"group": group, "members": list(members), "mean": mean, "std": std,
                     "size": size})
    return rows
