"""Probabilistic context-free grammars for the Liu et al. (2023) PCFG experiments.

Numpy-only building blocks are re-exported here; the JAX chart algorithms live
in :mod:`.chart`, :mod:`.inside`, :mod:`.viterbi`, :mod:`.conditionals` and
:mod:`.labels` and are imported explicitly so that ``import pipeline_lib.pcfg``
stays cheap.

Modules (one concept each):

* ``grammar``      the :class:`Grammar` arrays and validation
* ``grammar_io``   released rule-file and nltk-format readers, nltk writer
* ``generate``     seeded random hierarchical grammars
* ``sample``       seeded, shard-independent sentence sampler
* ``batching``     words -> ids, padded length-bucketed batches
* ``chart``        JAX inside / Viterbi charts (pure, jitted)
* ``inside``       log Z, inside charts, span marginals
* ``viterbi``      best trees as nltk-readable bracketed strings
* ``conditionals`` exact p(x_t | x_-t) and the optimal MLM loss
* ``labels``       downstream tasks A/B/C and their CSV
* ``mlm``          BERT-masked pre-training instances
* ``dataset``      the workflow's data stage (one builder per rule)
* ``readers``      loaders of the data stage's products (instances, tasks, vocab size)
* ``cli``          ``register_cli(subparsers)`` for the ``pcfg`` verb
"""

from pipeline_lib.pcfg.errors import GrammarError, PcfgError, UnknownWordError
from pipeline_lib.pcfg.generate import GrammarShape, generate_grammar
from pipeline_lib.pcfg.grammar import PROBABILITY_SUM_TOLERANCE, Grammar
from pipeline_lib.pcfg.grammar_io import parse_nltk_grammar, parse_rule_file, read_grammar, write_nltk_grammar
from pipeline_lib.pcfg.sample import sample_sentences

__all__ = [
    "PROBABILITY_SUM_TOLERANCE",
    "Grammar",
    "GrammarError",
    "GrammarShape",
    "PcfgError",
    "UnknownWordError",
    "generate_grammar",
    "parse_nltk_grammar",
    "parse_rule_file",
    "read_grammar",
    "sample_sentences",
    "write_nltk_grammar",
]
