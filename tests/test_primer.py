"""The Primer experiment (pipeline_lib.experiments.primer): windows, speed-up, budget, the
corpus stage, perplexity, the table's refusals and the finding, the config checks."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from pipeline_lib.config import load_config
from pipeline_lib.errors import ConfigError
from pipeline_lib.experiments.primer import windows as win
from pipeline_lib.experiments.primer.budget import steps_for
from pipeline_lib.experiments.primer.speedup import compute_to_reach, speedup

# --- windows -------------------------------------------------------------------------------


def test_stream_keeps_every_token_once_in_order_and_windows_end_with_eos():
    rng = np.random.default_rng(0)
    docs = [rng.integers(4, 50, rng.integers(1, 12)).astype(np.int32) for _ in range(60)]
    stream = win.token_stream(docs, end_id=3)
    expected = np.concatenate([np.append(d, 3) for d in docs])
    np.testing.assert_array_equal(stream, expected)
    windows = win.split_windows(stream, length=9, eos_id=2)
    assert windows.shape == (len(stream) // 8, 9) and windows.dtype == np.int32
    assert np.all(windows[:, -1] == 2)  # t5: length - 1 tokens + EOS
    np.testing.assert_array_equal(windows[:, :-1].reshape(-1), stream[: windows.shape[0] * 8])
    assert not np.any(windows == 0)  # no padding anywhere


def test_lm_inputs_shift_right_and_weight_every_position():
    windows = np.array([[5, 6, 7, 2], [8, 9, 4, 2]], np.int32)
    out = win.lm_inputs(windows)
    np.testing.assert_array_equal(out["tokens"], [[0, 5, 6, 7], [0, 8, 9, 4]])
    np.testing.assert_array_equal(out["targets"], windows)
    assert out["weights"].dtype == np.float32 and np.all(out["weights"] == 1)


def test_select_random_chunk_keeps_short_documents_and_one_aligned_chunk_of_long_ones():
    rng = np.random.default_rng(0)
    short = np.arange(10, dtype=np.int32)
    np.testing.assert_array_equal(win.select_random_chunk(short, 16, rng), short)
    long = np.arange(40, dtype=np.int32)
    chunks = {tuple(win.select_random_chunk(long, 16, rng)) for _ in range(50)}
    assert chunks == {tuple(range(0, 16)), tuple(range(16, 32)), tuple(range(32, 40))}


def test_held_out_split_and_hash():
    assert win.held_out_split([5, 5, 5, 5], windows=2, length=5, extra=1) == 2  # 12 >= 8
    assert win.held_out_split([1, 1], windows=9, length=5, extra=1) == 2  # all, too few
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert win.windows_hash(a) == win.windows_hash(a.copy())
    assert win.windows_hash(a) != win.windows_hash(a.reshape(4, 3))
    b = a.copy()
    b[0, 0] = 99
    assert win.windows_hash(a) != win.windows_hash(b)


# --- the corpus stage ----------------------------------------------------------------------


@pytest.fixture
def pcfg_dir(tmp_path):
    d = tmp_path / "pretrain"
    d.mkdir()
    words = [f"w{i}" for i in range(12)]
    (d / "vocab.txt").write_text("".join(t + "\n" for t in ["[PAD]", "[CLS]", "[SEP]", "[MASK]", *words]))
    rng = np.random.default_rng(1)
    lines = [" ".join(rng.choice(words, rng.integers(2, 9))) for _ in range(300)]
    (d / "sentences.txt").write_text("".join(x + "\n" for x in lines))
    return d, lines


def _section(**changes):
    cfg = load_config("config.yaml")["primer"]
    cfg.update(length=16, batch_size=4)
    cfg["data"] = {**cfg["data"], "validation_windows": 5}
    cfg.update(changes)
    return cfg


def test_corpus_validation_is_disjoint_and_deterministic(pcfg_dir, tmp_path):
    from pipeline_lib.experiments.primer.corpus import build_corpus, load_corpus

    d, lines = pcfg_dir
    meta = build_corpus(_section(), d, tmp_path / "a")
    again = build_corpus(_section(), d, tmp_path / "b")
    for name in ("train.npy", "validation.npy", "meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train, valid, loaded = load_corpus(tmp_path / "a")
    assert loaded == meta == again and valid.shape == (5, 16)
    held = meta["counts"]["validation_documents"]
    vocab = (d / "vocab.txt").read_text().splitlines()
    ids = {t: i for i, t in enumerate(vocab)}
    train_docs = [[ids[w] for w in x.split()] for x in lines[: len(lines) - held]]
    stream = np.concatenate([np.append(np.array(x, np.int32), ids["[SEP]"]) for x in train_docs])
    np.testing.assert_array_equal(train[:, :-1].reshape(-1), stream[: train.shape[0] * 15])
    valid_docs = [[ids[w] for w in x.split()] for x in lines[len(lines) - held:]]
    valid_stream = np.concatenate([np.append(np.array(x, np.int32), ids["[SEP]"]) for x in valid_docs])
    np.testing.assert_array_equal(valid[:, :-1].reshape(-1), valid_stream[: 5 * 15])
    assert meta["eos_id"] == ids["[SEP]"] and meta["vocab_size"] == len(vocab)
    np.save(tmp_path / "a" / "validation.npy", valid[::-1])  # edited after the fact
    with pytest.raises(ConfigError, match="its hash differs from meta.json"):
        load_corpus(tmp_path / "a")


def test_corpus_refuses_fewer_windows_than_a_batch_and_bad_text_paths(pcfg_dir, tmp_path):
    from pipeline_lib.experiments.primer.corpus import build_corpus

    d, _ = pcfg_dir
    with pytest.raises(ConfigError, match="primer.batch_size: 4000 is more than"):
        build_corpus(_section(batch_size=4000), d, tmp_path / "x")
    with pytest.raises(ConfigError, match="primer.data.validation_windows"):
        build_corpus(_section(data={"kind": "pcfg", "validation_windows": 10_000}), d, tmp_path / "y")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    for path, message in ((None, "needs a file"), (str(tmp_path / "nope.txt"), "is not a file"),
                          (str(empty), "is empty")):
        with pytest.raises(ConfigError, match=f"primer.data.path: .*{message}"):
            build_corpus(_section(data={"kind": "text", "path": path, "validation_windows": 2,
                                        "vocab_size": 40}), None, tmp_path / "z")
    assert not any((tmp_path / n).exists() for n in "xyz")  # nothing half-written


def test_text_corpus_with_a_local_sentencepiece_model(tmp_path):
    from pipeline_lib.experiments.primer.corpus import build_corpus

    rng = np.random.default_rng(2)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    text = tmp_path / "corpus.txt"
    text.write_text("".join(" ".join(rng.choice(words, 8)) + "\n" for _ in range(400)))
    section = _section(data={"kind": "text", "path": str(text), "validation_windows": 4,
                             "vocab_size": 24, "chunk_seed": 0})
    meta = build_corpus(section, None, tmp_path / "a")
    build_corpus(section, None, tmp_path / "b")
    assert meta["eos_id"] == 1 and meta["vocab_size"] == 24
    assert (tmp_path / "a" / "train.npy").read_bytes() == (tmp_path / "b" / "train.npy").read_bytes()
    assert (tmp_path / "a" / "spm.model").is_file()
    assert "alpha" in (tmp_path / "a" / "sample.jsonl").read_text() or "beta" in (
        tmp_path / "a" / "sample.jsonl").read_text()


# --- speed-up ------------------------------------------------------------------------------


def _power_law(compute, a=6.0, alpha=0.2):
    return a * np.asarray(compute, float) ** -alpha


@pytest.mark.parametrize("k", [1.5, 2.0, 3.7])
def test_speedup_recovers_a_known_shift_of_a_power_law(k):
    c = np.geomspace(1e3, 1e6, 40)
    baseline = (c, _power_law(c))
    candidate = (c, _power_law(c * k))  # reaches any loss with k times less compute
    result = speedup(baseline, candidate)
    assert result.reached and abs(result.factor / k - 1) < 0.01


def test_identical_curves_give_one_and_a_slower_candidate_is_not_reached():
    c = np.geomspace(1e3, 1e6, 30)
    assert speedup((c, _power_law(c)), (c, _power_law(c))).factor == pytest.approx(1.0)
    slow = speedup((c, _power_law(c)), (c, _power_law(c / 2)))
    assert not slow.reached and slow.compute_at_target is None
    assert slow.reverse == pytest.approx(2.0, rel=0.01) and slow.factor == pytest.approx(0.5, rel=0.01)


def test_noisy_curves_use_the_running_minimum():
    c = [1.0, 2.0, 4.0, 8.0]
    # the candidate dips to 1.0 at c=2, then a noisy eval goes back up: it already reached it
    assert compute_to_reach(c, [3.0, 1.0, 2.5, 2.0], target=1.5) == pytest.approx(
        math.exp(math.log(1) + 0.75 * (math.log(2) - math.log(1))))
    result = speedup((c, [3.0, 2.5, 2.0, 1.5]), (c, [3.0, 1.0, 2.5, 2.0]))
    assert result.reached and result.factor == pytest.approx(8.0 / 2 ** 0.75)
    assert compute_to_reach(c, [1.0, 0.5, 0.4, 0.3], target=2.0) == 1.0  # at the first eval


def test_speedup_on_the_steps_flops_and_wall_axes():
    """One pair of runs, three axes: FLOPs = steps x a constant keeps the factor of steps; a
    candidate that is 1.5x slower per step on the wall clock loses that factor there."""
    steps = np.arange(1, 41) * 25.0
    base, cand = _power_law(steps), _power_law(steps * 2.0)
    by_steps = speedup((steps, base), (steps, cand)).factor
    by_flops = speedup((steps * 3e9, base), (steps * 3.1e9, cand)).factor
    by_wall = speedup((steps * 0.1, base), (steps * 0.15, cand)).factor
    assert by_steps == pytest.approx(2.0, rel=0.01)
    assert by_flops == pytest.approx(2.0 * 3.0 / 3.1, rel=0.01)
    assert by_wall == pytest.approx(2.0 / 1.5, rel=0.01)


def test_speedup_rejects_malformed_curves():
    with pytest.raises(ValueError, match="increasing"):
        speedup(([1, 1], [2, 1]), ([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="equal-length"):
        speedup(([1, 2], [2]), ([1, 2], [2, 1]))
    with pytest.raises(ValueError, match="non-finite"):
        speedup(([1, 2], [2, float("nan")]), ([1, 2], [2, 1]))


# --- budget and config checks ----------------------------------------------------------------


def test_budget_in_steps_or_flops():
    assert steps_for({"kind": "steps", "value": 400}, 1e9, 25) == 400
    assert steps_for({"kind": "flops", "value": 1e12}, 3e9, 25) == 333
    with pytest.raises(ConfigError, match="less than one training step"):
        steps_for({"kind": "flops", "value": 1e6}, 3e9, 25)
    with pytest.raises(ConfigError, match="fewer than primer.eval_every = 25"):
        steps_for({"kind": "steps", "value": 10}, 3e9, 25)


@pytest.mark.parametrize("change,message", [
    ({"variants": ["primer_ez", "dense"]}, "primer.variants"),
    ({"baselines": ["transformer_pp"], "variants": ["primer_ez", "vanilla"]},
     r"primer.baselines\[0\]: 'transformer_pp' is not in primer.variants"),
    ({"budget": {"kind": "steps", "value": 10}}, "primer.budget.value"),
    ({"budget": {"kind": "flops", "value": 1000.0}}, "primer.budget.value"),
    ({"data": {"kind": "text"}}, "primer.data.path"),
    ({"data": {"kind": "text", "path": "/nonexistent/corpus.txt"}}, "primer.data.path"),
    ({"fidelity": "mesh"}, "primer.fidelity"),
])
def test_bad_primer_config_is_one_error_naming_the_key(tmp_path, change, message):
    import yaml

    cfg = yaml.safe_load(open("config.yaml"))
    cfg["primer"].update(copy.deepcopy(change))
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


# --- perplexity, the table and the finding ---------------------------------------------------


@pytest.fixture
def fast_compile():
    import jax

    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)  # a tiny model: compile dominates
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def test_eval_loss_is_the_token_weighted_mean_nll_over_all_windows(fast_compile):
    """loop.evaluate over `eval_batches` (last batch filled at weight 0) equals a numpy loop
    over every validation window: mean NLL, and perplexity = exp of it."""
    import flax.nnx as nnx

    from pipeline_lib.experiments.primer.pretrain import eval_batches
    from pipeline_lib.models import decoder_lm as dlm
    from pipeline_lib.train import loop

    cfg = dlm.decoder_lm_config("laptop", variant="primer_ez", fidelity="gins", vocab_size=24,
                                d_model=16, num_heads=2, head_dim=8, d_ff=32, num_layers=1)
    graphdef, params = nnx.split(dlm.DecoderLM(cfg, rngs=nnx.Rngs(params=0)))
    valid = np.random.default_rng(0).integers(1, 24, (7, 10)).astype(np.int32)

    def forward(p, b, rng):
        return dlm.decoder_lm_logits(graphdef, p, b["tokens"])

    loss_fn = loop.make_token_loss_fn(forward, targets_key="targets", weights_key="weights")
    got = loop.evaluate(loop.make_eval_step(loss_fn, np.float32), params, eval_batches(valid, 3)())
    total, count = 0.0, 0
    inputs = np.concatenate([np.zeros((len(valid), 1), np.int32), valid[:, :-1]], axis=1)
    every = np.asarray(dlm.decoder_lm_logits(graphdef, params, inputs))
    for window, logits in zip(valid, every):
        for t in range(len(window)):
            row = logits[t].astype(np.float64)
            total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[window[t]]
            count += 1
    assert got["num_tokens"] == count == 70
    assert got["loss"] == pytest.approx(total / count, rel=1e-5)
    assert math.exp(got["loss"]) == pytest.approx(math.exp(total / count), rel=1e-5)


def _summary(variant, seed, losses, **extra):
    steps = [25 * (i + 1) for i in range(len(losses))]
    return {"variant": variant, "seed": seed, "steps": steps[-1], "parameters": 1000,
            "flops_per_step": 1e9, "validation_loss": losses[-1],
            "validation_perplexity": math.exp(losses[-1]), "steps_per_s": 10.0,
            "validation_sha256": "v" * 64, "vocab_sha256": "w" * 64,
            "curve": [{"step": s, "flops": s * 1e9, "wall_seconds": s / 10, "loss": y}
                      for s, y in zip(steps, losses)], **extra}


def _table_cfg():
    cfg = load_config("config.yaml")
    cfg["primer"]["variants"] = ["primer_ez", "vanilla"]
    cfg["primer"]["baselines"] = ["vanilla"]
    return cfg


def test_table_speedups_findings_and_figure(tmp_path):
    from pipeline_lib.experiments.primer.tables import write_primer_table

    runs = []
    for seed in (0, 1, 2):
        c = np.arange(1, 9) * 25.0
        runs.append(_summary("vanilla", seed, list(_power_law(c))))
        runs.append(_summary("primer_ez", seed, list(_power_law(c * (2.0 + 0.1 * seed)))))
    findings = write_primer_table(_table_cfg(), runs, tmp_path / "primer", tmp_path / "curves.png")
    md = (tmp_path / "primer.md").read_text()
    assert "| primer_ez |" in md and "Speed-up vs vanilla (FLOPs)" in md and "Finding:" in md
    doc = json.loads((tmp_path / "primer.findings.json").read_text())
    (finding,) = doc["findings"]
    assert finding["verdict"] == "held" and finding["measured"] == pytest.approx(2.1, rel=0.02)
    assert finding["low"] > 1 and findings[0].n == 3
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_table_reports_not_reached_and_refuses_mixed_runs(tmp_path):
    from pipeline_lib.experiments.primer.tables import write_primer_table

    c = np.arange(1, 9) * 25.0
    runs = [_summary("vanilla", s, list(_power_law(c))) for s in (0, 1)]
    runs += [_summary("primer_ez", s, list(_power_law(c / 2))) for s in (0, 1)]
    (finding,) = write_primer_table(_table_cfg(), runs, tmp_path / "primer")
    assert finding.verdict == "not held" and finding.measured == pytest.approx(0.5, rel=0.02)
    md = (tmp_path / "primer.md").read_text()
    assert "primer_ez did not reach vanilla's final loss (not reached) in: seed 0 steps" in md
    assert "seed 1 FLOPs (reverse 2.00)" in md
    for key, what in (("validation_sha256", "validation windows"), ("vocab_sha256", "vocabulary")):
        mixed = copy.deepcopy(runs)
        mixed[0][key] = "x" * 64
        with pytest.raises(ConfigError, match=f"different {what}"):
            write_primer_table(_table_cfg(), mixed, tmp_path / "other")


def test_primer_optimizer_is_the_gins_adafactor_with_rsqrt_no_ramp_down():
    """paper.yaml: lr = 1/sqrt(max(step, 10k)) (0.01 flat, then 1/sqrt(step)); the laptop
    config only shortens the flat phase."""
    from pipeline_lib.train import optim

    paper = load_config("workflow/configs/paper.yaml")["primer"]["optimizer"]
    _, schedule = optim.optimizer_from_config(paper, 1_000_000)
    assert float(schedule(0)) == pytest.approx(0.01) and float(schedule(9_999)) == pytest.approx(0.01)
    assert float(schedule(40_000)) == pytest.approx(0.005)
    laptop = load_config("config.yaml")["primer"]["optimizer"]
    assert (laptop["name"], laptop["schedule"], laptop["learning_rate"]) == ("adafactor", "rsqrt", 1.0)
    _, schedule = optim.optimizer_from_config(laptop, 400)
    assert float(schedule(0)) == pytest.approx(1 / math.sqrt(laptop["warmup_steps"]))
