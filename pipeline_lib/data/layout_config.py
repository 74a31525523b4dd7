"""Config -> vocabulary layout and corpus specs (the one place that reads those config keys)."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.data.corpus import CorpusSpec
from pipeline_lib.data.synthetic import SPECIAL_CORPORA
from pipeline_lib.data.vocab import VocabLayout, laptop_layout, paper_layout
from pipeline_lib.remote import local_copy



def layout_from_config(cfg: dict, cache_dir: str | Path = "results/cache") -> VocabLayout:
    vocab = cfg["vocab"]
    if vocab["layout"] == "paper":
        spm = vocab.get("spm_model")
        return paper_layout(str(local_copy(spm, cache_dir)) if spm else None)
    # The laptop word table always holds the nonsense corpus' words (whether or not that task
    # is listed), so adding or removing a task never shifts the ids of the others.
    from pipeline_lib.data.nonsense import NonsenseParams, nonsense_words

    words = nonsense_words(NonsenseParams(**cfg["corpora"]["nonsense_summary"]))
    return laptop_layout(vocab["data_vocab_size"], words)


def corpus_spec(cfg: dict, task: str) -> CorpusSpec:
    corpora = cfg["corpora"]
    section = task if task in SPECIAL_CORPORA else None
    return CorpusSpec(
        task=task,
        seed=int(cfg["seed"]),
        train_examples=int(corpora["train_examples"]),
        valid_examples=int(corpora["valid_examples"]),
        generate_factor=float(corpora["generate_factor"]),
        length_range=tuple(corpora["length_range"]),
        block_size=int(corpora["block_size"]),
        params=dict(corpora[section]) if section else {},
    )
