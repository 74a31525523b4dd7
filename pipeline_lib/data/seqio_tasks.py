"""seqio registration of the generated corpora (imports TensorFlow: only import it lazily).

Each corpus source becomes a seqio Task named `wu2022_<source>` reading the same memory-mapped
arrays as the native loader, with seqio's own `append_eos` preprocessor: features `inputs` and
`targets` as int32 ids with EOS appended, the original T5X input format. `lime` also gets the
equal-rate Mixture of its three modes, as in the original (`default_rate=1`). The vocabulary is
a `PassThroughVocabulary` over the layout's ids, so nothing is downloaded; a SentencePiece
vocabulary can be swapped in for decoding text at paper scale.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline_lib.data import store

SEQIO_SPLITS = {"train": "train", "validation": "valid"}


def task_name(source: str) -> str:
    return f"wu2022_{source}"


def register_corpus(corpus_dir: Path, replace: bool = True) -> list[str]:
    """Register every source of one corpus directory; return the Task (and Mixture) names."""
    import functools

    import seqio
    import tensorflow as tf

    corpus_dir = Path(corpus_dir)
    meta = store.read_meta(corpus_dir)
    vocab = seqio.PassThroughVocabulary(
        size=meta["vocab"]["model_vocab_size"], eos_id=meta["vocab"]["eos_id"]
    )
    features = {
        "inputs": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
        "targets": seqio.Feature(vocab, add_eos=True, dtype=tf.int32),
    }
    names = []
    for source, info in meta["sources"].items():
        name = task_name(source)
        if replace:
            seqio.TaskRegistry.remove(name)
        num_examples = {s: info["counts"][ours] for s, ours in SEQIO_SPLITS.items()}
        seqio.TaskRegistry.add(
            name,
            source=seqio.FunctionDataSource(
                dataset_fn=functools.partial(_dataset_fn, corpus_dir, source),
                splits=list(SEQIO_SPLITS),
                num_input_examples=num_examples,
            ),
            preprocessors=[seqio.preprocessors.append_eos],
            output_features=features,
        )
        names.append(name)
    if meta["task"] == "lime":
        mixture = "wu2022_lime"
        if replace:
            seqio.MixtureRegistry.remove(mixture)
        seqio.MixtureRegistry.add(mixture, names, default_rate=1.0)
        names.append(mixture)
    return names


def _dataset_fn(corpus_dir: Path, source: str, split: str, shuffle_files: bool, seed=None):
    import tensorflow as tf

    ours = SEQIO_SPLITS[split]
    inputs = store.read_split(corpus_dir, source, ours, "inputs")
    targets = store.read_split(corpus_dir, source, ours, "targets")

    def rows():
        for i in range(inputs.n):
            yield {
                "inputs": np.asarray(inputs.row(i), np.int32),
                "targets": np.asarray(targets.row(i), np.int32),
            }

    spec = {
        "inputs": tf.TensorSpec([None], tf.int32),
        "targets": tf.TensorSpec([None], tf.int32),
    }
    return tf.data.Dataset.from_generator(rows, output_signature=spec)


def peek(corpus_dir: Path, split: str, n: int) -> list[dict]:
    """The first n examples of each source through seqio.get_dataset (EOS appended)."""
    import seqio

    out = []
    for name in register_corpus(corpus_dir):
        if name not in seqio.TaskRegistry.names():
            continue
        ds = seqio.get_dataset(
            name,
            task_feature_lengths={"inputs": 1 << 20, "targets": 1 << 20},
            feature_converter=seqio.PassThroughFeatureConverter(),
            dataset_split=split,
            shuffle=False,
            verbose=False,
        )
        for ex in ds.take(n).as_numpy_iterator():
            out.append({"task": name, **{k: v.tolist() for k, v in ex.items()}})
    return out
