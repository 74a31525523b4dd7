"""The ``pcfg`` CLI verb: ``register_cli(subparsers)`` adds it to the project's argparse CLI.

Sub-verbs: ``generate-grammar``, ``sample``, ``parse``, ``labels``,
``optimal-loss``, ``mlm``, and the workflow's data stage (one per Snakemake
rule, all taking ``--spec`` = the config's ``pcfg:`` section as JSON; see
:mod:`pipeline_lib.pcfg.dataset`): ``build-grammar``, ``build-pretrain``,
``build-downstream``, ``build-optimal-loss``.  Each handler is stored as ``args.func`` and returns
an exit code; user errors print one ``pcfg <verb>: error: ...`` line naming
the file/line/key and return 1.  Every output is written atomically.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline_lib.files import atomic_open, atomic_write_text
from pipeline_lib.pcfg.batching import OnUnknown, encode_sentences, read_sentences
from pipeline_lib.pcfg.errors import PcfgError
from pipeline_lib.pcfg.generate import RELEASED_LIKE_SHAPE, GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar import Grammar
from pipeline_lib.pcfg.grammar_io import read_grammar, write_nltk_grammar
from pipeline_lib.pcfg.sample import DEFAULT_LENGTH_LIMIT, sample_sentences, sentences_to_text
from pipeline_lib.pcfg.transduction import TASKS as TRANSDUCTION_TASKS

Handler = Callable[[argparse.Namespace], int]


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pcfg`` verb and its sub-verbs to ``subparsers``; returns the ``pcfg`` parser."""
    parser = subparsers.add_parser("pcfg", help="PCFG data: grammars, sampling, parsing, labels, optimal loss, MLM")
    verbs = parser.add_subparsers(dest="pcfg_verb", metavar="VERB", required=True)

    generate = verbs.add_parser("generate-grammar", help="write a random hierarchical grammar (nltk format)")
    defaults = GrammarShape()
    generate.add_argument("--out", required=True, type=Path)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--released-like", action="store_true", help="use the released grammar's sizes")
    for field, flag in _SHAPE_FLAGS.items():
        generate.add_argument(flag, dest=field, type=type(getattr(defaults, field)), default=None)
    _set_handler(generate, _generate_grammar)

    sample = verbs.add_parser("sample", help="sample sentences, one per line")
    _add_grammar_arguments(sample)
    sample.add_argument("--n", type=int, required=True)
    sample.add_argument("--seed", type=int, required=True)
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--start-index", type=int, default=0, help="global index of the first sentence (sharding)")
    sample.add_argument("--length-limit", type=int, default=DEFAULT_LENGTH_LIMIT, help="keep sentences with len < this")
    _set_handler(sample, _sample)

    parse = verbs.add_parser("parse", help="inside log-prob, Viterbi tree and optionally conditionals (JSONL)")
    _add_grammar_arguments(parse)
    _add_chart_arguments(parse)
    parse.add_argument("--sentences", type=Path, required=True)
    parse.add_argument("--out", type=Path, required=True)
    parse.add_argument("--conditionals", action="store_true", help="add exact p(x_t = w | x_-t) per position")
    parse.add_argument("--on-unknown", choices=["error", "flag"], default="error")
    _set_handler(parse, _parse)

    labels = verbs.add_parser("labels", help="downstream task labels as a text,label CSV")
    _add_grammar_arguments(labels)
    _add_chart_arguments(labels)
    labels.add_argument("--task", choices=["A", "B", "C"], required=True)
    labels.add_argument("--out", type=Path, required=True)
    source = labels.add_mutually_exclusive_group(required=True)
    source.add_argument("--sentences", type=Path, help="label these (sentences outside 4 < len < 32 are skipped)")
    source.add_argument("--n", type=int, help="draw this many sentences with 4 < len < 32")
    labels.add_argument("--seed", type=int, default=0)
    labels.add_argument("--split", choices=["train", "validation"], default="train")
    _set_handler(labels, _labels)

    optimal = verbs.add_parser("optimal-loss", help="exact optimal single-mask MLM loss (JSON on stdout)")
    _add_grammar_arguments(optimal)
    _add_chart_arguments(optimal)
    optimal.add_argument("--sentences", type=Path, required=True)
    optimal.add_argument("--out", type=Path, help="also write the JSON here")
    optimal.add_argument(
        "--no-renormalize",
        action="store_true",
        help="use stored rule probabilities as-is (default: renormalise per LHS, the sampling distribution)",
    )
    _set_handler(optimal, _optimal_loss)

    mlm = verbs.add_parser("mlm", help="BERT-masked instances (.npz), one sentence per example")
    _add_grammar_arguments(mlm)
    mlm.add_argument("--sentences", type=Path, required=True)
    mlm.add_argument("--out", type=Path, required=True)
    mlm.add_argument("--seed", type=int, required=True)
    mlm.add_argument("--vocab", type=Path, help="BERT vocab.txt: use its ids instead of the compact vocabulary")
    mlm.add_argument("--first-index", type=int, default=0, help="global index of the first sentence (sharding)")
    mlm.add_argument("--max-seq-length", type=int, default=32)
    mlm.add_argument("--masked-lm-prob", type=float, default=0.15)
    mlm.add_argument("--max-predictions-per-seq", type=int, default=5)
    mlm.add_argument("--dup-factor", type=int, default=5)
    _set_handler(mlm, _mlm)

    _add_build_verbs(verbs)
    return parser


def _add_build_verbs(verbs: argparse._SubParsersAction) -> None:
    """The data-stage verbs: each writes one directory atomically (see :mod:`.dataset`)."""
    spec_help = (
        "the validated config's pcfg: sections this product reads, as JSON (complete sections; "
        "unknown or missing keys rejected)"
    )
    grammar_help = "grammar directory written by build-grammar"
    build = verbs.add_parser(
        "build-grammar", help="grammar.txt (nltk) + meta.json from pcfg.grammar or pcfg.generate"
    )
    build.add_argument("--spec", required=True, help=spec_help)
    build.add_argument("--out", type=Path, required=True, help="output directory")
    _set_handler(build, _build_grammar)
    for verb, help_text in (
        ("build-pretrain", "pre-training sentences + BERT-masked instances (.npy)"),
        ("build-downstream", "downstream task train/validation sets (CSV + .npy)"),
        ("build-optimal-loss", "evaluation sentences, exact conditionals, optimal MLM loss"),
        ("build-transduction", "a seq2seq task from the Viterbi trees (train/validation/test TSV)"),
    ):
        build = verbs.add_parser(verb, help=help_text)
        build.add_argument("--spec", required=True, help=spec_help)
        build.add_argument("--grammar", type=Path, required=True, help=grammar_help)
        if verb == "build-downstream":
            build.add_argument("--task", choices=["A", "B", "C"], required=True)
        if verb == "build-transduction":
            build.add_argument("--task", choices=sorted(TRANSDUCTION_TASKS), required=True)
        build.add_argument("--out", type=Path, required=True, help="output directory")
        _set_handler(build, _build_product)


_SHAPE_FLAGS = {
    "n_roots": "--roots",
    "n_levels": "--levels",
    "nonterminals_per_level": "--nonterminals-per-level",
    "n_terminals": "--terminals",
    "binary_rules_per_nonterminal": "--binary-rules-per-nonterminal",
    "words_per_bottom_nonterminal": "--words-per-bottom-nonterminal",
    "lexical_probability_min": "--lexical-probability-min",
    "lexical_probability_max": "--lexical-probability-max",
    "dirichlet_concentration": "--dirichlet-concentration",
}


def _add_grammar_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grammar", type=Path, required=True, help="rule file or nltk-format grammar")
    parser.add_argument("--grammar-format", choices=["auto", "rules", "nltk"], default="auto")
    parser.add_argument(
        "--allow-unreachable",
        action="store_true",
        help="keep nonterminals unreachable from the start symbol (needed for the released rule_deep_mlm.txt)",
    )


def _add_chart_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--method", choices=["dense", "sparse"], default="dense", help="inside binary-rule contraction (dense measured faster)")


def _set_handler(parser: argparse.ArgumentParser, handler: Handler) -> None:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except (PcfgError, ValueError) as error:
            print(f"pcfg {args.pcfg_verb}: error: {error}", file=sys.stderr)
            return 1

    parser.set_defaults(func=run)


def _load_grammar(args: argparse.Namespace) -> Grammar:
    return read_grammar(args.grammar, args.grammar_format, allow_unreachable=args.allow_unreachable)


def _load_sentences(args: argparse.Namespace, grammar: Grammar, on_unknown: OnUnknown = "error"):
    try:
        return encode_sentences(grammar, read_sentences(args.sentences), on_unknown)
    except PcfgError as error:
        raise PcfgError(f"{args.sentences}: {error}") from None


def _generate_grammar(args: argparse.Namespace) -> int:
    base = RELEASED_LIKE_SHAPE if args.released_like else GrammarShape()
    overrides = {field: getattr(args, field) for field in _SHAPE_FLAGS if getattr(args, field) is not None}
    shape = GrammarShape(**{**base.__dict__, **overrides})
    write_nltk_grammar(generate_grammar(shape, args.seed), args.out)
    return 0


def _sample(args: argparse.Namespace) -> int:
    grammar = _load_grammar(args)
    sentences = sample_sentences(
        grammar, args.n, args.seed, start_index=args.start_index, length_limit=args.length_limit
    )
    atomic_write_text(args.out, sentences_to_text(grammar, sentences))
    return 0


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _parse(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg.conditionals import exact_conditionals
    from pipeline_lib.pcfg.inside import sentence_log_probs
    from pipeline_lib.pcfg.viterbi import viterbi_parses

    grammar = _load_grammar(args)
    words = read_sentences(args.sentences)
    sentences, _ = _load_sentences(args, grammar, args.on_unknown)
    log_probs = sentence_log_probs(grammar, sentences, batch_size=args.batch_size, method=args.method)
    parses = viterbi_parses(grammar, sentences, batch_size=args.batch_size)
    conditionals: Sequence[np.ndarray | None] = [None] * len(sentences)
    if args.conditionals:
        conditionals = exact_conditionals(grammar, sentences, batch_size=args.batch_size, method=args.method)
    with atomic_open(args.out, "w") as handle:
        for index, (text, log_prob, best) in enumerate(zip(words, log_probs, parses)):
            record: dict = {
                "index": index,
                "sentence": " ".join(text),
                "zero_probability": not math.isfinite(log_prob),
                "log_prob": _finite_or_none(log_prob),
                "best_tree": best.tree,
                "best_log_prob": _finite_or_none(best.log_prob),
            }
            if args.conditionals:
                # Rows are positions; columns are the grammar's terminals in sorted order.
                table = conditionals[index]
                record["conditionals"] = None if table is None else [[float(f"{p:.7g}") for p in row] for row in table]
            handle.write(json.dumps(record) + "\n")
    return 0


def _labels(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg.labels import draw_downstream_sentences, is_downstream_length, task_labels, write_label_csv

    grammar = _load_grammar(args)
    if args.sentences is not None:
        all_sentences, _ = _load_sentences(args, grammar)
        sentences = [s for s in all_sentences if is_downstream_length(len(s))]
        skipped = len(all_sentences) - len(sentences)
        if skipped:
            print(f"pcfg labels: skipped {skipped} sentences outside 4 < length < 32", file=sys.stderr)
    else:
        sentences = draw_downstream_sentences(grammar, args.n, args.seed, args.split)
    labels = task_labels(grammar, sentences, args.task, batch_size=args.batch_size, method=args.method)
    write_label_csv(args.out, grammar, sentences, labels)
    return 0


def _optimal_loss(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg.conditionals import optimal_mlm_loss

    grammar = _load_grammar(args)
    if not args.no_renormalize:
        grammar = grammar.renormalized()
    sentences, _ = _load_sentences(args, grammar)
    report = optimal_mlm_loss(grammar, sentences, batch_size=args.batch_size, method=args.method).as_dict()
    text = json.dumps(report, sort_keys=True)
    if args.out is not None:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


def _mlm(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg.mlm import MlmConfig, bert_vocabulary, compact_vocabulary, create_mlm_instances, write_mlm_instances

    grammar = _load_grammar(args)
    sentences, _ = _load_sentences(args, grammar)
    vocabulary = compact_vocabulary(grammar) if args.vocab is None else bert_vocabulary(grammar, args.vocab)
    config = MlmConfig(
        max_seq_length=args.max_seq_length,
        masked_lm_prob=args.masked_lm_prob,
        max_predictions_per_seq=args.max_predictions_per_seq,
        dup_factor=args.dup_factor,
    )
    instances = create_mlm_instances(sentences, vocabulary, args.seed, config, first_index=args.first_index)
    write_mlm_instances(args.out, instances)
    return 0


def _build_grammar(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg import dataset

    dataset.ensure_logging()
    dataset.build_grammar(dataset.parse_spec_argument(args.spec), args.out)
    return 0


def _build_product(args: argparse.Namespace) -> int:
    from pipeline_lib.pcfg import dataset

    dataset.ensure_logging()
    spec = dataset.parse_spec_argument(args.spec)
    if args.pcfg_verb == "build-pretrain":
        dataset.build_pretrain(spec, args.grammar, args.out)
    elif args.pcfg_verb == "build-downstream":
        dataset.build_downstream(spec, args.grammar, args.out, args.task)
    elif args.pcfg_verb == "build-transduction":
        dataset.build_transduction(spec, args.grammar, args.out, args.task)
    else:
        dataset.build_optimal_loss(spec, args.grammar, args.out)
    return 0
