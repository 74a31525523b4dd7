"""The BERT of one `implicit_bias.sizes` entry for the PCFG vocabulary (pre-training and
evaluation both build it from here, so neither imports the other)."""

from __future__ import annotations


def bert_for_size(liu: dict, size: str, vocab: int, num_labels: int = 0, probe_length: int = 20):
    """The BertConfig of `implicit_bias.sizes[size]` for the PCFG vocabulary."""
    from pipeline_lib.models.bert import bert_config, padded_vocab_size

    entry = liu["sizes"][size]
    return bert_config(
        entry["preset"],
        prefix=f"implicit_bias.sizes.{size}",
        **{
            "vocab_size": padded_vocab_size(vocab),
            "num_labels": num_labels,
            "probe_length": probe_length,
            **entry.get("overrides", {}),
        },
    )
