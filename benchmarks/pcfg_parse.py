"""Parse throughput: batched JAX inside + Viterbi vs nltk's ViterbiParser.

    python benchmarks/pcfg_parse.py [--quick]

Runs on the released grammar (``/work/shared/data/pcfg/rule_deep_mlm.txt``,
skipped with a message if absent) and on a generated grammar.  JAX figures are
measured after a warm-up pass over the same length buckets, so compilation is
reported separately.  Prints readable lines, then one JSON object of figures
as the last line.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable

try:
    import pipeline_lib.pcfg  # noqa: F401
except ModuleNotFoundError:  # running from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nltk
import numpy as np

from pipeline_lib.pcfg.generate import GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.grammar_io import format_nltk_grammar, read_grammar
from pipeline_lib.pcfg.inside import sentence_log_probs
from pipeline_lib.pcfg.sample import sample_sentences
from pipeline_lib.pcfg.viterbi import viterbi_parses

RELEASED_GRAMMAR = Path("/work/shared/data/pcfg/rule_deep_mlm.txt")


def timed(function: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def benchmark_grammar(name: str, grammar: Grammar, n_sentences: int, n_nltk: int, batch_size: int) -> dict[str, float]:
    sentences = sample_sentences(grammar, n_sentences, seed=0)
    lengths = [len(s) for s in sentences]
    print(f"[{name}] {grammar.n_nonterminals} nonterminals, {grammar.n_terminals} terminals, "
          f"{len(grammar.binary_rules)} binary rules; {n_sentences} sentences, mean length {np.mean(lengths):.2f}")
    figures: dict[str, float] = {}
    compile_seconds = 0.0
    for method in ("sparse", "dense"):
        warm, _ = timed(lambda: sentence_log_probs(grammar, sentences, batch_size=batch_size, method=method))
        seconds, log_z = timed(lambda: sentence_log_probs(grammar, sentences, batch_size=batch_size, method=method))
        compile_seconds += warm - seconds
        figures[f"{method}_inside_sentences_per_s"] = n_sentences / seconds
        print(f"[{name}] JAX inside ({method}): {n_sentences / seconds:,.0f} sentences/s")
    warm, _ = timed(lambda: viterbi_parses(grammar, sentences, batch_size=batch_size))
    viterbi_seconds, parses = timed(lambda: viterbi_parses(grammar, sentences, batch_size=batch_size))
    compile_seconds += warm - viterbi_seconds
    figures["viterbi_with_trees_sentences_per_s"] = n_sentences / viterbi_seconds
    best_inside = max(("sparse", "dense"), key=lambda m: figures[f"{m}_inside_sentences_per_s"])
    combined = 1.0 / (1.0 / figures[f"{best_inside}_inside_sentences_per_s"] + viterbi_seconds / n_sentences)
    figures["jax_sentences_per_s"] = combined
    figures["jax_compile_s"] = compile_seconds
    print(f"[{name}] JAX Viterbi + tree recovery: {figures['viterbi_with_trees_sentences_per_s']:,.0f} sentences/s")
    print(f"[{name}] JAX inside ({best_inside}) + Viterbi: {combined:,.0f} sentences/s (compile ~{compile_seconds:.1f} s)")

    reference = nltk.ViterbiParser(nltk.PCFG.fromstring(format_nltk_grammar(grammar)))
    chosen = sorted(range(n_sentences), key=lambda i: lengths[i])[:: max(1, n_sentences // n_nltk)][:n_nltk]
    words = [[grammar.terminals[t] for t in sentences[i]] for i in chosen]
    nltk_seconds, nltk_trees = timed(lambda: [next(iter(reference.parse(w))) for w in words])
    differences = [abs(math.log(tree.prob()) - parses[i].log_prob) for i, tree in zip(chosen, nltk_trees)]
    figures["nltk_viterbi_sentences_per_s"] = len(chosen) / nltk_seconds
    figures["speedup_vs_nltk"] = combined / figures["nltk_viterbi_sentences_per_s"]
    figures["max_best_log_prob_diff_vs_nltk_nats"] = max(differences)
    print(f"[{name}] nltk ViterbiParser: {figures['nltk_viterbi_sentences_per_s']:.2f} sentences/s on {len(chosen)} "
          f"sentences (mean length {np.mean([len(w) for w in words]):.1f}); best log-prob agrees within "
          f"{max(differences):.2e} nats")
    print(f"[{name}] speed-up of JAX inside + Viterbi over nltk Viterbi alone: {figures['speedup_vs_nltk']:,.0f}x")
    del log_z
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sentences (smoke test)")
    args = parser.parse_args()
    n_sentences, n_nltk, batch_size = (128, 3, 64) if args.quick else (1024, 8, 128)
    results: dict[str, float] = {}
    if RELEASED_GRAMMAR.exists():
        released = read_grammar(RELEASED_GRAMMAR, allow_unreachable=True)
        released_figures = benchmark_grammar("released", released, n_sentences, n_nltk, batch_size)
        results.update(released_figures)  # headline figures are the released grammar's
        results.update({f"released_{k}": v for k, v in released_figures.items()})
    else:
        print(f"[released] skipped: {RELEASED_GRAMMAR} not found")
    generated_figures = benchmark_grammar("generated", generate_grammar(GrammarShape(), seed=0), n_sentences, n_nltk, batch_size)
    if "jax_sentences_per_s" not in results:
        results.update(generated_figures)
    results.update({f"generated_{k}": v for k, v in generated_figures.items()})
    results["n_sentences"] = n_sentences
    print(json.dumps({k: (float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in results.items()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
