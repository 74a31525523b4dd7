"""The inference metrics of Wu et al. (2022) §4, as T5 computes them; every score is x100.

* `rouge`: `t5.evaluation.metrics.rouge`: the `rouge_score` package, rouge1/rouge2/rougeLsum,
  no stemmer, " . " -> " .\\n" in both texts (so rougeLsum sees one sentence per line; rouge1/2
  ignore it). DECISION: aggregation is the plain **mean** of the per-example F-measures by
  default. T5 reports the `mid` of rouge_score's `BootstrapAggregator`, the median of 1000
  bootstrap means drawn from NumPy's unseeded global RNG, so T5's number is not reproducible;
  the mean is what that median estimates. `aggregation="bootstrap"` gives the T5 procedure with
  a fixed seed (the global NumPy RNG state is restored afterwards).
* `exact_match`: string equality of prediction and target, no normalisation (the paper's EM
  for code translation, MTOP, WebQSP, retrosynthesis, and accuracy for the PCFG tasks).
* `token_f1`: F1 of whitespace tokens (bag-of-tokens overlap), no normalisation; T5's
  `qa_utils._f1_score`, so no overlap scores 0 even when both strings are empty.
* `squad`: SQuAD v1.1 (`t5.evaluation.metrics.squad`): lower-case, drop ASCII punctuation,
  drop the articles a/an/the, collapse whitespace; EM and token F1 take the max over the gold
  answers.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Sequence

ROUGE_KEYS = ("rouge1", "rouge2", "rougeLsum")
METRIC_NAMES = ROUGE_KEYS + ("exact_match", "token_f1", "squad_em", "squad_f1")
BOOTSTRAP_SEED = 0

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class MetricError(ValueError):
    """Predictions and references that cannot be scored together."""


def _check_pairs(predictions: Sequence, references: Sequence, what: str) -> None:
    if len(predictions) != len(references):
        raise MetricError(
            f"{what}: {len(predictions)} predictions but {len(references)} references"
        )
    if not predictions:
        raise MetricError(f"{what}: nothing to score (no predictions)")


def _mean100(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values)


# --- per-example scores (pure) -----------------------------------------------------------------
def f1_tokens(prediction_tokens: Sequence[str], target_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1 in [0, 1]; 0 without any common token (T5's _f1_score)."""
    common = collections.Counter(prediction_tokens) & collections.Counter(target_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(target_tokens)
    return 2 * precision * recall / (precision + recall)


def normalize_squad(text: str) -> str:
    """SQuAD v1.1 answer normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


# --- corpus-level metrics ----------------------------------------------------------------------
def _prepare_summary(text: str) -> str:
    # T5: newlines between sentences so that rougeLsum is computed per sentence
    return text.replace(" . ", " .\n")


def rouge(
    predictions: Sequence[str], references: Sequence[str], aggregation: str = "mean"
) -> dict[str, float]:
    """{"rouge1","rouge2","rougeLsum"} F-measures x100 (see the module doc for aggregation)."""
    _check_pairs(predictions, references, "rouge")
    from rouge_score import rouge_scorer, scoring  # only the summarisation task needs it

    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)
    scores = [
        scorer.score(target=_prepare_summary(r), prediction=_prepare_summary(p))
        for p, r in zip(predictions, references)
    ]
    if aggregation == "mean":
        return {k: _mean100([s[k].fmeasure for s in scores]) for k in ROUGE_KEYS}
    if aggregation == "bootstrap":
        import numpy as np

        aggregator = scoring.BootstrapAggregator()
        for s in scores:
            aggregator.add_scores(s)
        state = np.random.get_state()
        np.random.seed(BOOTSTRAP_SEED)
        try:
            result = aggregator.aggregate()
        finally:
            np.random.set_state(state)
        return {k: 100.0 * float(result[k].mid.fmeasure) for k in ROUGE_KEYS}
    raise MetricError(f"rouge: aggregation {aggregation!r}; expected mean or bootstrap")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check_pairs(predictions, references, "exact_match")
    return _mean100([float(p == r) for p, r in zip(predictions, references)])


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> float:
    _check_pairs(predictions, references, "token_f1")
    return _mean100([f1_tokens(p.split(), r.split()) for p, r in zip(predictions, references)])


def squad(predictions: Sequence[str], answers_list: Sequence[Sequence[str]]) -> dict[str, float]:
    """{"squad_em","squad_f1"}: normalised EM and F1, max over each question's gold answers."""
    _check_pairs(predictions, answers_list, "squad")
    em, f1 = [], []
    for i, (prediction, answers) in enumerate(zip(predictions, answers_list)):
        if isinstance(answers, str) or not answers:
            raise MetricError(f"squad: example {i}: answers must be a non-empty list of strings")
        p = normalize_squad(prediction)
        golds = [normalize_squad(a) for a in answers]
        em.append(max(float(p == g) for g in golds))
        f1.append(max(f1_tokens(p.split(), g.split()) for g in golds))
    return {"squad_em": _mean100(em), "squad_f1": _mean100(f1)}


# --- by name -------------------------------------------------------------------------------------
def _groups() -> dict[str, Callable[[Sequence[str], Sequence], dict[str, float]]]:
    """Metric name -> function of (predictions, examples) returning that name's group."""

    def targets(examples):
        return [e.targets for e in examples]

    def rouge_group(p, ex):
        return rouge(p, targets(ex))

    def squad_group(p, ex):
        return squad(p, [e.answers for e in ex])

    return {
        **{k: rouge_group for k in ROUGE_KEYS},
        "exact_match": lambda p, ex: {"exact_match": exact_match(p, targets(ex))},
        "token_f1": lambda p, ex: {"token_f1": token_f1(p, targets(ex))},
        "squad_em": squad_group,
        "squad_f1": squad_group,
    }


def compute_metrics(names: Sequence[str], predictions: Sequence[str], examples: Sequence) -> dict:
    """{name: score} for metric `names` of `predictions` against `examples` (Example-like:
    `.targets`, and `.answers` for SQuAD). Each metric family is computed once."""
    groups = _groups()
    unknown = [n for n in names if n not in groups]
    if unknown:
        raise MetricError(
            f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRIC_NAMES)}"
        )
    _check_pairs(predictions, examples, "compute_metrics")
    computed: dict[str, float] = {}
    for name in names:
        if name not in computed:
            computed.update(groups[name](predictions, examples))
    return {name: computed[name] for name in names}
