"""PCFG toolkit throughput vs nltk: sampling, Viterbi parsing, task labels, exact conditionals.

    python benchmarks/pcfg_parse.py [--quick] [--batch-size B] [--jax-cache DIR]

Runs on the released grammar (``/work/shared/data/pcfg/rule_deep_mlm.txt``,
loaded with ``allow_unreachable=True``; a released-like generated grammar
stands in, with a message, if the file is absent), then (not with
``--quick``) on a smaller generated grammar.  A cold run spends minutes
compiling (each padded length of each program); ``--quick --jax-cache DIR``
takes about a minute once ``DIR`` holds the compiled programs of an earlier run.  In one process and on the same grammar and sentences it measures:

* **sampling**: :func:`sample_sentences` against the original nltk-based
  recursive sampler (``Generator._generate_derivation`` of
  ``generate_pretraining.py``, re-implemented below: ``random.choices`` over
  ``PCFG.productions(lhs=...)``, returning the sentence, the derivation
  probability and the bracketed tree), and a lean variant of it that only
  builds the sentence;
* **Viterbi** best parses *with* bracketed trees (:func:`viterbi_parses`)
  against ``nltk.ViterbiParser`` on length-stratified sentences, comparing the
  best log-probabilities;
* **inside** log Z (:func:`sentence_log_probs`);
* **labels** of downstream tasks A, B and C (:func:`task_labels`);
* **exact conditionals** p(x_t | x_-t) (:func:`exact_conditionals`) for
  10,000 sentences (1,000 with ``--quick``).

JAX figures are steady-state: each is timed on a second pass over the same
sentences, after a first pass that compiled every padded shape; the
difference is reported as the compile time.  For the conditionals the
compile time is also measured with JAX's persistent compilation cache warm
(in-memory caches cleared, executables read back from ``--jax-cache``, a
temporary directory by default).  Prints readable lines, then one JSON object
of figures as the last line; every key carries its unit (``_per_s``,
``_s``, ``_nats``, ``_ratio``/``_x`` for dimensionless ratios).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import pipeline_lib.pcfg  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import nltk
import numpy as np

from pipeline_lib.pcfg import fastchart
from pipeline_lib.pcfg.conditionals import exact_conditionals
from pipeline_lib.pcfg.generate import RELEASED_LIKE_SHAPE, GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.grammar_io import format_nltk_grammar, read_grammar
from pipeline_lib.pcfg.inside import sentence_log_probs
from pipeline_lib.pcfg.labels import TASKS, draw_downstream_sentences, task_labels
from pipeline_lib.pcfg.sample import sample_sentences
from pipeline_lib.pcfg.viterbi import viterbi_parses

RELEASED_GRAMMAR = Path("/work/shared/data/pcfg/rule_deep_mlm.txt")
CONDITIONALS_TARGET_SENTENCES = 10_000


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def warm_and_time(function: Callable[[], object]) -> tuple[float, float, object]:
    """(steady-state seconds, compile seconds ~ first pass - second pass, result)."""
    first, _ = timed(function)
    seconds, result = timed(function)
    return seconds, max(0.0, first - seconds), result


# ---------------------------------------------------------------------------
# The original nltk-based sampler (reference section 1.3), as a baseline


class NltkGenerator:
    """``generate_pretraining.py``'s ``Generator``: recursive expansion over an ``nltk.PCFG``."""

    def __init__(self, grammar: nltk.PCFG, seed: int) -> None:
        self.grammar = grammar
        self.random = random.Random(seed)

    def _choose_production_reducing(self, nonterminal):
        productions = self.grammar.productions(lhs=nonterminal)
        return self.random.choices(productions, weights=[p.prob() for p in productions])[0]

    def _generate_derivation(self, nonterminal) -> tuple[list[str], float, str]:
        production = self._choose_production_reducing(nonterminal)
        sentence: list[str] = []
        probability = production.prob()
        derivation = f"({nonterminal} "
        for symbol in production.rhs():
            if isinstance(symbol, str):
                sentence.append(symbol)
                derivation += symbol
            else:
                words, p, tree = self._generate_derivation(symbol)
                sentence += words
                probability *= p
                derivation += tree
        return sentence, probability, derivation + ")"

    def generate(self, n: int, length_limit: int = 32) -> list[str]:
        sentences = []
        while len(sentences) < n:
            words, _, _ = self._generate_derivation(self.grammar.start())
            if len(words) < length_limit:
                sentences.append(" ".join(words))
        return sentences


class LeanNltkGenerator(NltkGenerator):
    """The same recursion building only the word list (no probability, no tree string)."""

    def _words(self, nonterminal) -> list[str]:
        production = self._choose_production_reducing(nonterminal)
        words: list[str] = []
        for symbol in production.rhs():
            if isinstance(symbol, str):
                words.append(symbol)
            else:
                words += self._words(symbol)
        return words

    def _generate_derivation(self, nonterminal) -> tuple[list[str], float, str]:
        return self._words(nonterminal), 1.0, ""


# ---------------------------------------------------------------------------


def benchmark_sampling(name: str, grammar: Grammar, nltk_grammar: nltk.PCFG, n_ours: int, n_nltk: int) -> dict[str, float]:
    sample_sentences(grammar, 1000, seed=99)  # builds the cached tables
    seconds, _ = timed(lambda: sample_sentences(grammar, n_ours, seed=0))
    ours = n_ours / seconds
    faithful_seconds, _ = timed(lambda: NltkGenerator(nltk_grammar, seed=0).generate(n_nltk))
    lean_seconds, _ = timed(lambda: LeanNltkGenerator(nltk_grammar, seed=0).generate(n_nltk))
    figures = {
        "sampling_sentences_per_s": ours,
        "nltk_sampler_sentences_per_s": n_nltk / faithful_seconds,
        "nltk_sampler_lean_sentences_per_s": n_nltk / lean_seconds,
    }
    figures["sampling_ratio_vs_nltk_sampler"] = ours / figures["nltk_sampler_sentences_per_s"]
    figures["sampling_ratio_vs_nltk_sampler_lean"] = ours / figures["nltk_sampler_lean_sentences_per_s"]
    print(f"[{name}] sampling: {ours:,.0f} sentences/s ({n_ours} sentences); nltk recursive sampler "
          f"{figures['nltk_sampler_sentences_per_s']:,.0f}/s (lean {figures['nltk_sampler_lean_sentences_per_s']:,.0f}/s, "
          f"{n_nltk} sentences): {figures['sampling_ratio_vs_nltk_sampler']:.1f}x "
          f"(lean {figures['sampling_ratio_vs_nltk_sampler_lean']:.1f}x)")
    return figures


def benchmark_parsing(
    name: str, grammar: Grammar, nltk_grammar: nltk.PCFG, sentences: list[np.ndarray], n_nltk: int, batch_size: int
) -> dict[str, float]:
    n = len(sentences)
    figures: dict[str, float] = {}
    seconds, compile_seconds, parses = warm_and_time(lambda: viterbi_parses(grammar, sentences, batch_size=batch_size))
    figures["viterbi_sentences_per_s"] = n / seconds
    figures["viterbi_compile_s"] = compile_seconds
    print(f"[{name}] JAX Viterbi with bracketed trees: {n / seconds:,.0f} sentences/s "
          f"({n} sentences, batch {batch_size}; compile ~{compile_seconds:.1f} s)")
    seconds, compile_seconds, log_z = warm_and_time(lambda: sentence_log_probs(grammar, sentences, batch_size=batch_size))
    figures["inside_log_z_sentences_per_s"] = n / seconds
    figures["inside_compile_s"] = compile_seconds
    print(f"[{name}] JAX inside (log Z): {n / seconds:,.0f} sentences/s (compile ~{compile_seconds:.1f} s)")
    combined = 1.0 / (1.0 / figures["viterbi_sentences_per_s"] + 1.0 / figures["inside_log_z_sentences_per_s"])
    figures["inside_plus_viterbi_sentences_per_s"] = combined

    parser = nltk.ViterbiParser(nltk_grammar)
    lengths = [len(s) for s in sentences]
    by_length = sorted(range(n), key=lambda i: lengths[i])
    chosen = [by_length[int(q)] for q in np.linspace(0, n - 1, n_nltk)]  # length-stratified
    words = [[grammar.terminals[t] for t in sentences[i]] for i in chosen]
    nltk_seconds, trees = timed(lambda: [next(iter(parser.parse(w))) for w in words])
    differences = [abs(math.log(tree.prob()) - parses[i].log_prob) for i, tree in zip(chosen, trees)]
    same_trees = sum(_flat(tree) == _flat(nltk.Tree.fromstring(parses[i].tree)) for i, tree in zip(chosen, trees))
    figures["nltk_viterbi_sentences_per_s"] = len(chosen) / nltk_seconds
    figures["viterbi_speedup_vs_nltk_x"] = figures["viterbi_sentences_per_s"] / figures["nltk_viterbi_sentences_per_s"]
    figures["inside_plus_viterbi_speedup_vs_nltk_x"] = combined / figures["nltk_viterbi_sentences_per_s"]
    figures["viterbi_max_abs_log_prob_diff_vs_nltk_nats"] = max(differences)
    figures["viterbi_same_tree_as_nltk_fraction"] = same_trees / len(chosen)
    print(f"[{name}] nltk ViterbiParser: {figures['nltk_viterbi_sentences_per_s']:.2f} sentences/s on {len(chosen)} "
          f"length-stratified sentences (mean length {np.mean([len(w) for w in words]):.1f}); best log-prob agrees within "
          f"{max(differences):.2e} nats; same tree for {same_trees}/{len(chosen)}")
    print(f"[{name}] per-sentence speed-up of JAX Viterbi (with trees) over nltk: {figures['viterbi_speedup_vs_nltk_x']:,.0f}x "
          f"(inside + Viterbi: {figures['inside_plus_viterbi_speedup_vs_nltk_x']:,.0f}x)")
    del log_z
    return figures


def _flat(tree: nltk.Tree) -> str:
    """A tree's bracketing on one line (without nltk's ``(p=...)`` suffix of probabilistic trees)."""
    return " ".join(nltk.Tree.pformat(tree, margin=10**9).split())


def benchmark_labels(name: str, grammar: Grammar, n: int, batch_size: int) -> dict[str, float]:
    sentences = draw_downstream_sentences(grammar, n, seed=0, split="train")
    figures: dict[str, float] = {}
    for task in TASKS:
        seconds, compile_seconds, _ = warm_and_time(lambda task=task: task_labels(grammar, sentences, task, batch_size=batch_size))
        figures[f"labels_{task}_sentences_per_s"] = n / seconds
        figures[f"labels_{task}_compile_s"] = compile_seconds
        print(f"[{name}] task {task} labels: {n / seconds:,.0f} sentences/s ({n} sentences; compile ~{compile_seconds:.1f} s)")
    return figures


def benchmark_conditionals(name: str, grammar: Grammar, n: int, batch_size: int, cache_dir: str | None) -> dict[str, float]:
    sentences = sample_sentences(grammar, n, seed=1)
    def run():
        return exact_conditionals(grammar, sentences, batch_size=batch_size)

    cold, _ = timed(run)
    seconds, tables = timed(run)
    figures = {
        "conditionals_sentences_per_s": n / seconds,
        "conditionals_compile_s": max(0.0, cold - seconds),
    }
    if n == CONDITIONALS_TARGET_SENTENCES:
        figures["conditionals_10k_sentences_s"] = seconds
    label = "10k" if n == CONDITIONALS_TARGET_SENTENCES else f"{n}"
    print(f"[{name}] exact conditionals: {seconds:.2f} s for {label} sentences ({n / seconds:,.0f} sentences/s, "
          f"batch {batch_size}); compile {figures['conditionals_compile_s']:.1f} s")
    if cache_dir is not None:
        jax.clear_caches()
        fastchart.compiled.cache_clear()
        warm_cache, _ = timed(run)
        figures["conditionals_compile_s_persistent_cache_warm"] = max(0.0, warm_cache - seconds)
        print(f"[{name}] exact conditionals, in-memory caches cleared, persistent cache warm: {warm_cache:.2f} s "
              f"(compile ~{figures['conditionals_compile_s_persistent_cache_warm']:.1f} s)")
    total = sum(float((t * np.log(np.where(t > 0, t, 1.0))).sum()) for t in tables if t is not None)
    print(f"[{name}] (check: mean conditional entropy {-total / sum(len(s) for s in sentences):.4f} nats per token)")
    return figures


def benchmark_grammar(name: str, grammar: Grammar, args: argparse.Namespace, full_suite: bool, cache_dir: str | None) -> dict[str, float]:
    quick = args.quick
    nltk_grammar = nltk.PCFG.fromstring(format_nltk_grammar(grammar))
    print(f"[{name}] {grammar.n_nonterminals} nonterminals, {grammar.n_terminals} terminals, "
          f"{len(grammar.binary_rules)} binary rules")
    figures = benchmark_sampling(name, grammar, nltk_grammar, 20_000 if quick else 200_000, 300 if quick else 3000)
    n_parse = 256 if quick else 2048
    sentences = sample_sentences(grammar, n_parse, seed=0)
    print(f"[{name}] parsing {n_parse} sentences, mean length {np.mean([len(s) for s in sentences]):.2f}")
    figures.update(benchmark_parsing(name, grammar, nltk_grammar, sentences, 4 if quick else 16, args.batch_size))
    if full_suite:
        figures.update(benchmark_labels(name, grammar, 256 if quick else 2048, args.batch_size))
        n_conditionals = 1000 if quick else CONDITIONALS_TARGET_SENTENCES
        figures.update(benchmark_conditionals(name, grammar, n_conditionals, args.batch_size, cache_dir))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sentences (smoke test)")
    parser.add_argument("--batch-size", type=int, default=128, help="chart batch size (default 128)")
    parser.add_argument("--jax-cache", help="persistent JAX compilation cache directory (default: a temporary one)")
    parser.add_argument("--no-jax-cache", action="store_true", help="do not use a persistent compilation cache")
    args = parser.parse_args()

    temporary = None
    cache_dir = None
    if not args.no_jax_cache:
        cache_dir = args.jax_cache or (temporary := tempfile.TemporaryDirectory(prefix="pcfg_jax_cache_")).name
        jax.config.update("jax_compilation_cache_dir", cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

    results: dict[str, float | int | bool | str] = {}
    if RELEASED_GRAMMAR.exists():
        released = read_grammar(RELEASED_GRAMMAR, allow_unreachable=True)
        results["grammar"] = "released"
    else:
        print(f"[released] {RELEASED_GRAMMAR} not found: using a released-like generated grammar instead")
        released = generate_grammar(RELEASED_LIKE_SHAPE, seed=0)
        results["grammar"] = "released_like_generated"
    results.update(benchmark_grammar("released", released, args, True, cache_dir))
    if not args.quick:  # a second grammar (small, recursive-free) only in the full run
        generated = benchmark_grammar("generated", generate_grammar(GrammarShape(), seed=0), args, False, None)
        results.update({f"generated_{k}": v for k, v in generated.items()})
    results["batch_size"] = args.batch_size
    results["quick"] = args.quick
    results["persistent_cache"] = cache_dir is not None
    if temporary is not None:
        temporary.cleanup()
    print(json.dumps({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in results.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
