"""Wu et al. init schemes (pipeline_lib.experiments.transfer.init_schemes): groupings, statistics, seeding, errors.

The "pretrained" dict is built so that every tensor has an exactly known mean and population
std (distinct per tensor), in float64, so that pooled statistics can be recomputed by brute
force (np.concatenate) and dtype casts are exercised. The fresh dict is a real tiny T5 init.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from flax import nnx

from pipeline_lib.experiments.transfer import init_schemes as S
from pipeline_lib.models import T5, T5Config, flat_params, load_flat_params, t5_config
from pipeline_lib.train.checkpoint import load_params

TINY = T5Config(
    vocab_size=32, d_model=16, num_heads=2, head_dim=8, d_ff=32,
    num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
)
TINY_V11 = dataclasses.replace(TINY, mlp="gated-gelu", tie_embeddings=False)
EMBED = "token_embedder/embedding"
STAT_SCHEMES = [s for s in S.INIT_SCHEMES if "___" in s]


def abstract(cfg: T5Config) -> T5:
    return nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(params=0)))


def names_of(cfg: T5Config) -> list[str]:
    return list(flat_params(abstract(cfg)))


def exact_stats_tensor(rng, shape, mean, std) -> np.ndarray:
    z = rng.standard_normal(shape)
    z = (z - z.mean()) / z.std()
    return mean + std * z


def make_pretrained(fresh: dict, seed: int = 7) -> tuple[dict, dict]:
    """float64 tensors with distinct, exactly known per-tensor (mean, population std)."""
    rng = np.random.default_rng(seed)
    params, stats = {}, {}
    for i, name in enumerate(sorted(fresh)):
        mean = (-1) ** i * (0.3 + 0.1 * i)
        std = 0.01 * 2 ** (i % 6)
        params[name] = exact_stats_tensor(rng, fresh[name].shape, mean, std)
        stats[name] = (mean, std)
    return params, stats


def brute(params: dict, members: list[str]) -> tuple[float, float]:
    pooled = np.concatenate([np.asarray(params[m], np.float64).ravel() for m in members])
    return float(pooled.mean()), float(pooled.std())  # numpy's std is ddof=0


@pytest.fixture(scope="module")
def fresh() -> dict[str, np.ndarray]:
    model = T5(TINY, rngs=nnx.Rngs(params=0))
    return {k: np.asarray(v) for k, v in flat_params(model).items()}


@pytest.fixture(scope="module")
def pretrained(fresh):
    return make_pretrained(fresh)


@pytest.fixture(scope="module")
def results(fresh, pretrained):
    """Every scheme applied once (seed 3), shared by the per-scheme tests."""
    schemes = [*S.INIT_SCHEMES, S.preattn_ln_scheme(0.4)]
    return {s: S.apply_init_scheme(s, fresh, pretrained[0], seed=3) for s in schemes}


# --------------------------------------------------------------------------------------------
# Groupings: counts of the reference table on the real 6+6 layer T5-small names.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_names() -> list[str]:
    return names_of(t5_config("t5_small"))


def test_t5_small_has_130_groupable_params_plus_embedding(small_names):
    assert len(small_names) == 131 and EMBED in small_names
    assert "decoder/logits_dense/kernel" not in small_names  # v1.0: tied logits


@pytest.mark.parametrize(
    "grouping, sizes",
    [
        ("per_param_grouping", [1] * 130),
        ("across_ALL_layer_AND_per_layer_grouping", [96, 32, 2]),
        ("preattnln_per_param_grouping", [1] * 18),
        ("across_ALL_layer_grouping", [18, 18, 18, 18, 24, 12, 18, 2, 2]),
        # per layer i, encoder then decoder: kernels (4+2 / 8+2), norms (2 / 3); 4 singletons
        ("per_layer_grouping", [6, 2, 10, 3] * 6 + [1, 1, 1, 1]),
        ("premlpln_per_param_grouping", [1] * 12),
        ("qkvo_per_param_grouping", [1] * 72),
        ("mlp_per_param_grouping", [1] * 24),
    ],
)
def test_t5_small_group_sizes_match_reference(small_names, grouping, sizes):
    got = S.groups(grouping, small_names)
    assert [len(g) for g in got] == sizes
    members = [m for g in got for m in g]
    assert len(members) == len(set(members)) and EMBED not in members
    # The full scheme id selects the same grouping.
    assert S.groups(f"{grouping}___init_scale", small_names) == got


def test_t5_small_group_members_follow_the_original_regexes(small_names):
    named = dict(S.named_groups("across_ALL_layer_grouping", small_names))
    assert all(n.endswith("/query/kernel") for n in named["query"])
    assert named["final_norms"] == ["encoder/encoder_norm/scale", "decoder/decoder_norm/scale"]
    assert sorted(named["relpos"]) == [
        "decoder/relpos_bias/rel_embedding", "encoder/relpos_bias/rel_embedding"]
    assert set(named["pre_attention_layer_norms"]) == set(S.preattn_ln_names(small_names))
    whole = dict(S.named_groups("across_ALL_layer_AND_per_layer_grouping", small_names))
    assert all(n.endswith("/scale") for n in whole["layer_norms"])
    assert all(n.endswith("/kernel") for n in whole["attention_and_mlp_kernels"])
    per_layer = dict(S.named_groups("per_layer_grouping", small_names))
    assert sorted(per_layer["decoder/layers_5/layer_norms"]) == [
        f"decoder/layers_5/{n}/scale" for n in
        ("pre_cross_attention_layer_norm", "pre_mlp_layer_norm", "pre_self_attention_layer_norm")]
    assert all(m.startswith("encoder/layers_3/") for m in per_layer["encoder/layers_3/kernels"])
    # Table 3's own regexes pick exactly the 18 pre-attention LayerNorm scales.
    assert S.preattn_ln_names(small_names) == [
        g[0] for g in S.groups("preattnln_per_param_grouping", small_names)]
    assert len(S.preattn_ln_names(small_names)) == 18


def test_per_layer_prefix_does_not_confuse_layer_1_with_layer_10():
    cfg = dataclasses.replace(TINY, num_encoder_layers=11, num_decoder_layers=1)
    per_layer = dict(S.named_groups("per_layer_grouping", names_of(cfg)))
    assert len(per_layer["encoder/layers_1/kernels"]) == 6
    assert all("/layers_1/" in m for m in per_layer["encoder/layers_1/kernels"])
    assert "decoder/layers_1/kernels" not in per_layer  # depths may differ


def test_t5_v11_gated_mlp_grouped_and_logits_dense_treated_like_the_embedding():
    names = names_of(t5_config("t5_1_1_small"))
    assert "decoder/logits_dense/kernel" in names and len(names) == 190
    for grouping in S.GROUPINGS:
        members = [m for g in S.groups(grouping, names) for m in g]
        assert not set(members) & set(S.VOCAB_PARAMS)
    mlp = [g[0] for g in S.groups("mlp_per_param_grouping", names)]
    assert len(mlp) == 3 * 16 and any(m.endswith("mlp/wi_1/kernel") for m in mlp)
    assert len(S.groups("per_param_grouping", names)) == 188


# --------------------------------------------------------------------------------------------
# Statistics.
# --------------------------------------------------------------------------------------------


def test_pooled_mean_std_is_population_statistics_of_the_concatenation():
    rng = np.random.default_rng(0)
    tensors = [rng.normal(3.0, 2.0, s).astype(np.float32) for s in [(4, 5), (7,), (2, 3, 2)]]
    mean, std, size = S.pooled_mean_std(tensors)
    flat = np.concatenate([t.astype(np.float64).ravel() for t in tensors])
    assert size == flat.size
    np.testing.assert_allclose([mean, std], [flat.mean(), flat.std(ddof=0)], rtol=1e-12)
    assert S.pooled_mean_std([np.array([0.0, 2.0])])[:2] == (1.0, 1.0)  # ddof=0, not sqrt(2)


def test_group_statistics_of_the_source_are_the_constructed_ones(pretrained):
    params, stats = pretrained
    rows = S.group_statistics("per_param_grouping___init_scale", params)
    assert len(rows) == len(params) - 1
    for row in rows:
        (name,) = row["members"]
        assert row["group"] == name and row["size"] == params[name].size
        np.testing.assert_allclose([row["mean"], row["std"]], stats[name], rtol=1e-9, atol=1e-12)
    assert S.group_statistics("random", params) == []


# --------------------------------------------------------------------------------------------
# Every scheme on a real tiny T5.
# --------------------------------------------------------------------------------------------


def expected_touched(scheme: str, names: list[str]) -> set[str]:
    """Which parameters a scheme changes, written with substrings (not the module's regexes)."""
    rest = {n for n in names if n != EMBED}
    pre_attn = {n for n in names if re.search(r"pre_(attention|self_attention|cross_attention)_",
                                              n)}
    return {
        "random": set(),
        "pretrained": set(names),
        "pretrained_no_embed": rest,
        "preattnln_per_param_grouping___init_scale": pre_attn,
        "premlpln_per_param_grouping___init_scale": {n for n in names if "pre_mlp_layer_norm" in n},
        "qkvo_per_param_grouping___init_scale": {
            n for n in names if n.endswith("kernel") and "attention/" in n},
        "mlp_per_param_grouping___init_scale": {n for n in names if "/mlp/" in n},
    }.get(scheme, pre_attn if scheme.startswith("preattn_ln_") else rest)


@pytest.mark.parametrize("scheme", [*S.INIT_SCHEMES, "preattn_ln_0.4"])
def test_scheme_changes_exactly_its_parameters_and_keeps_keys_shapes_dtypes(
    scheme, fresh, results
):
    out = results[scheme]
    assert list(out) == list(fresh)
    for name, value in out.items():
        assert value.shape == fresh[name].shape and value.dtype == fresh[name].dtype, name
    changed = {n for n in fresh if not np.array_equal(out[n], fresh[n])}
    assert changed == expected_touched(scheme, list(fresh))
    if scheme != "pretrained":
        np.testing.assert_array_equal(out[EMBED], fresh[EMBED])


@pytest.mark.parametrize("scheme", STAT_SCHEMES)
def test_statistics_schemes_match_the_pooled_source_statistics(scheme, fresh, pretrained, results):
    params, _ = pretrained
    out = results[scheme]
    init_scale = scheme.endswith("___init_scale")
    z_all = []
    for group, members in S.named_groups(scheme, list(fresh)):
        mean, std = brute(params, members)
        if init_scale and "norm" in members[0]:
            for m in members:  # LayerNorm scales: exactly the constant group mean
                np.testing.assert_array_equal(out[m], np.full(out[m].shape, np.float32(mean)))
            continue
        loc = 0.0 if init_scale else mean
        drawn = np.concatenate([out[m].astype(np.float64).ravel() for m in members])
        n = drawn.size
        assert abs(drawn.mean() - loc) < 6 * std / np.sqrt(n), group
        assert abs(drawn.std() / std - 1) < max(6 / np.sqrt(2 * n), 0.05), group
        for m in members:
            z = (out[m].astype(np.float64) - loc) / std
            # the documented stream: N(0, 1) keyed by (seed, parameter name)
            np.testing.assert_allclose(z, S.standard_normal(3, m, out[m].shape),
                                       rtol=1e-5, atol=1e-5 * (1 + abs(loc) / std))
            z_all.append(z.ravel())
    if z_all:  # all draws of the scheme together: standard normal to within sampling error
        z = np.concatenate(z_all)
        assert abs(z.mean()) < 5 / np.sqrt(z.size) and abs(z.std() - 1) < 5 / np.sqrt(2 * z.size)


def test_whole_model_scale_uses_one_pooled_statistic_per_kind(fresh, pretrained, results):
    params, _ = pretrained
    out = results["across_ALL_layer_AND_per_layer_grouping___init_scale"]
    norms = [n for n in fresh if "norm" in n]
    assert len(norms) == 2 * 2 + 2 * 3 + 2
    constant = np.float32(brute(params, norms)[0])
    assert all(np.all(out[n] == constant) for n in norms)
    kernels = [n for n in fresh if n.endswith("kernel")]
    rows = S.group_statistics("across_ALL_layer_AND_per_layer_grouping___init_scale", out)
    assert [r["size"] for r in rows] == [
        sum(fresh[n].size for n in kernels), sum(fresh[n].size for n in norms),
        2 * TINY.num_heads * TINY.relpos_buckets]
    # per-parameter stds differ 32-fold in the source; the pooled draw gives them one std
    source_std = brute(params, kernels)[1]
    for n in kernels:
        assert 0.6 < out[n].std() / source_std < 1.4, n


def test_pretrained_copies_weights_cast_to_the_model_dtype(fresh, pretrained, results):
    params, _ = pretrained
    for scheme in ("pretrained", "pretrained_no_embed"):
        for name, value in results[scheme].items():
            if scheme == "pretrained_no_embed" and name == EMBED:
                continue
            np.testing.assert_array_equal(value, params[name].astype(np.float32))


def test_preattn_ln_sets_the_constant_without_a_checkpoint(fresh):
    out = S.apply_init_scheme(S.preattn_ln_scheme(0.05), fresh, None, seed=0)
    names = S.preattn_ln_names(list(fresh))
    assert len(names) == 2 + 2 * 2  # encoder self; decoder self and cross
    for n in fresh:
        if n in names:
            assert out[n].dtype == np.float32 and np.all(out[n] == np.float32(0.05))
        else:
            np.testing.assert_array_equal(out[n], fresh[n])


def test_inputs_are_not_modified_and_the_result_does_not_alias_them(fresh, pretrained):
    params, _ = pretrained
    before = {k: v.copy() for k, v in fresh.items()}
    out = S.apply_init_scheme("random", fresh, None, seed=0)
    out2 = S.apply_init_scheme("pretrained", fresh, params, seed=0)
    for k in fresh:
        out[k][...] = 0
        out2[k][...] = 0
        np.testing.assert_array_equal(fresh[k], before[k])
    assert not np.all(params[EMBED] == 0)


# --------------------------------------------------------------------------------------------
# Seeding.
# --------------------------------------------------------------------------------------------


def test_same_seed_same_result_other_seed_other_draws_independent_of_dict_order(
    fresh, pretrained, results
):
    params, _ = pretrained
    scheme = "per_layer_grouping___init_scale"
    again = S.apply_init_scheme(scheme, fresh, params, seed=3)
    reordered = S.apply_init_scheme(
        scheme, dict(reversed(fresh.items())), dict(reversed(params.items())), seed=3)
    other = S.apply_init_scheme(scheme, fresh, params, seed=4)
    for n in fresh:
        np.testing.assert_array_equal(again[n], results[scheme][n])
        np.testing.assert_array_equal(reordered[n], results[scheme][n])
        drawn = n != EMBED and "norm" not in n
        assert np.array_equal(other[n], again[n]) != drawn, n


def test_each_parameter_has_its_own_random_stream(results, pretrained):
    _, stats = pretrained
    out = results["per_param_grouping___init_scale"]
    kernels = [n for n in out if n.endswith("attention/query/kernel")]
    z = [out[n].ravel() / stats[n][1] for n in kernels]  # same shapes, N(0, 1) after scaling
    for i in range(len(z)):
        for j in range(i):
            assert abs(np.corrcoef(z[i], z[j])[0, 1]) < 0.3, (kernels[i], kernels[j])


def test_schemes_share_standard_normals_per_parameter(results):
    # common random numbers: per-param scale and mean/SD differ only by the statistics
    a = results["per_param_grouping___init_scale"]["encoder/layers_0/mlp/wi/kernel"]
    b = results["per_param_grouping___init_mean_std"]["encoder/layers_0/mlp/wi/kernel"]
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


# --------------------------------------------------------------------------------------------
# The result loads back into the model.
# --------------------------------------------------------------------------------------------


def test_result_loads_into_the_model_and_through_an_npz(tmp_path, results):
    out = results["across_ALL_layer_grouping___init_scale"]
    path = tmp_path / "init.npz"
    np.savez(path, **out)
    flat = load_params(path)
    model = abstract(TINY)
    load_flat_params(model, flat)
    loaded = {k: np.asarray(v) for k, v in flat_params(model).items()}
    assert list(loaded) == sorted(out)
    for k, v in loaded.items():
        assert v.dtype == out[k].dtype and v.shape == out[k].shape
        np.testing.assert_array_equal(v, out[k])


def test_t5_v11_schemes_keep_logits_dense_fresh():
    model = abstract(TINY_V11)
    rng = np.random.default_rng(1)
    fresh = {k: rng.normal(0, 1, v.shape).astype(np.float32)
             for k, v in flat_params(model).items()}
    params, _ = make_pretrained(fresh)
    for scheme in ("per_param_grouping___init_mean_std", "pretrained_no_embed",
                   "mlp_per_param_grouping___init_scale"):
        out = S.apply_init_scheme(scheme, fresh, params, seed=0)
        for vocab in S.VOCAB_PARAMS:
            np.testing.assert_array_equal(out[vocab], fresh[vocab])
        assert not np.array_equal(out["decoder/layers_1/mlp/wi_0/kernel"],
                                  fresh["decoder/layers_1/mlp/wi_0/kernel"])
    load_flat_params(model, out)


# --------------------------------------------------------------------------------------------
# Ids, labels, errors.
# --------------------------------------------------------------------------------------------


def test_scheme_ids_labels_and_checkpoint_needs():
    assert len(S.INIT_SCHEMES) == 12 and len(STAT_SCHEMES) == 9
    labels = [S.scheme_label(s) for s in S.INIT_SCHEMES]
    assert len(set(labels)) == len(labels)
    assert S.scheme_label("per_param_grouping___init_mean_std") == "Per Param Mean/SD"
    assert S.scheme_label("across_ALL_layer_AND_per_layer_grouping___init_scale") == (
        "Whole Model Scale")
    assert S.scheme_label("preattn_ln_0.4") == "Pre-attn LN = 0.4"
    assert not S.needs_checkpoint("random") and not S.needs_checkpoint("preattn_ln_0.4")
    assert all(S.needs_checkpoint(s) for s in S.INIT_SCHEMES if s != "random")
    for v in (0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1, 1e-5, 1 / 3):
        scheme = S.preattn_ln_scheme(v)
        assert S.parse_preattn_ln_scheme(scheme) == float(v)
    assert S.preattn_ln_scheme(0.4) == "preattn_ln_0.4"
    assert S.parse_preattn_ln_scheme("random") is None


@pytest.mark.parametrize(
    "bad, message",
    [
        ("preattn_ln_abc", "is not a number"),
        ("preattn_ln_0.40", "write it as 'preattn_ln_0.4'"),
        ("preattn_ln_-0.4", "> 0"),
        ("preattn_ln_nan", "finite"),
    ],
)
def test_malformed_preattn_ids_are_rejected(bad, message):
    with pytest.raises(S.InitSchemeError, match=re.escape(message)):
        S.validate_scheme(bad)
    with pytest.raises(S.InitSchemeError):
        S.preattn_ln_scheme(float("inf"))
    with pytest.raises(S.InitSchemeError):
        S.preattn_ln_scheme(True)


def test_unknown_scheme_lists_the_valid_ones(fresh):
    with pytest.raises(S.InitSchemeError) as err:
        S.apply_init_scheme("per_param___init_mean", fresh, None, seed=0)
    assert all(s in str(err.value) for s in S.INIT_SCHEMES) and "preattn_ln_" in str(err.value)
    with pytest.raises(S.InitSchemeError, match="unknown grouping 'per_params'"):
        S.groups("per_params", list(fresh))
    with pytest.raises(S.InitSchemeError, match="unknown init scheme"):
        S.groups("per_param_grouping___init_median", list(fresh))


def test_checkpoint_problems_name_the_parameter(fresh, pretrained):
    params, _ = pretrained
    scheme = "per_param_grouping___init_scale"
    with pytest.raises(S.InitSchemeError, match="needs pre-trained parameters"):
        S.apply_init_scheme(scheme, fresh, None, seed=0)
    missing = {k: v for k, v in params.items() if k != "decoder/decoder_norm/scale"}
    with pytest.raises(S.InitSchemeError, match="lack 'decoder/decoder_norm/scale'"):
        S.apply_init_scheme(scheme, fresh, missing, seed=0)
    with pytest.raises(S.InitSchemeError, match="'encoder/extra/kernel' is not in the model"):
        S.apply_init_scheme(scheme, fresh, {**params, "encoder/extra/kernel": np.ones(2)}, seed=0)
    name = "encoder/layers_1/mlp/wo/kernel"
    wrong = {**params, name: np.ones((3, 16))}
    for s in (scheme, "pretrained"):
        with pytest.raises(S.InitSchemeError, match=re.escape(f"{name!r} has shape (3, 16)")):
            S.apply_init_scheme(s, fresh, wrong, seed=0)
    nan = {**params, name: np.full(params[name].shape, np.nan)}
    with pytest.raises(S.InitSchemeError, match="'mlp' has non-finite"):
        S.apply_init_scheme("across_ALL_layer_grouping___init_scale", fresh, nan, seed=0)
    for seed in (-1, 1.5, True):
        with pytest.raises(S.InitSchemeError, match="seed"):
            S.apply_init_scheme(scheme, fresh, params, seed=seed)


def test_non_t5_names_are_reported_not_silently_skipped(fresh):
    names = [*fresh, "encoder/adapter/kernel"]
    with pytest.raises(S.InitSchemeError, match="'encoder/adapter/kernel' is in no group"):
        S.groups("across_ALL_layer_grouping", names)
    with pytest.raises(S.InitSchemeError, match="no parameter name matches"):
        S.groups("mlp_per_param_grouping", ["bert/layer_0/dense/kernel"])
    with pytest.raises(S.InitSchemeError, match="no pre-attention LayerNorm"):
        S.apply_init_scheme("preattn_ln_0.4", {"w": np.ones(2)}, None, seed=0)


def test_ambiguous_names_are_rejected(fresh):
    twice = [*fresh, "encoder/layers_0/attention/key_value/kernel"]  # '.*key' and '.*value'
    with pytest.raises(S.InitSchemeError, match="key_value/kernel' is in groups 'key' and 'value'"):
        S.groups("across_ALL_layer_grouping", twice)
    mixed = [*fresh, "encoder/layers_0/mlp/norm/scale"]
    with pytest.raises(S.InitSchemeError, match="group 'mlp' mixes LayerNorm scales"):
        S.groups("across_ALL_layer_grouping", mixed)
