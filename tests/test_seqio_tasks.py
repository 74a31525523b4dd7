"""The seqio Tasks yield exactly the native loader's examples (plus seqio's EOS)."""

import subprocess
import sys

import numpy as np
import pytest

from pipeline_lib.data.corpus import CorpusSpec, build_corpus, load_corpus
from pipeline_lib.data.vocab import laptop_layout

seqio = pytest.importorskip("seqio")


def test_jobs_without_seqio_never_import_tensorflow():
    code = (
        "import sys, pipeline_lib.cli, pipeline_lib.data.corpus, pipeline_lib.data.layout_config;"
        "assert 'tensorflow' not in sys.modules and 'seqio' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_seqio_get_dataset_matches_native_loader(tmp_path):
    from pipeline_lib.data.seqio_tasks import register_corpus

    layout = laptop_layout(64)
    spec = CorpusSpec(task="sort", seed=3, train_examples=60, valid_examples=12,
                      generate_factor=1.2, length_range=(4, 12), block_size=64, params={})
    build_corpus(spec, layout, tmp_path / "sort")
    (name,) = register_corpus(tmp_path / "sort")
    for seqio_split, ours in [("train", "train"), ("validation", "valid")]:
        ds = seqio.get_dataset(
            name,
            task_feature_lengths={"inputs": 64, "targets": 64},
            feature_converter=seqio.PassThroughFeatureConverter(),
            dataset_split=seqio_split,
            shuffle=False,
            verbose=False,
        )
        got = list(ds.as_numpy_iterator())
        inputs, targets = load_corpus(tmp_path / "sort", ours)["sort"]
        assert len(got) == inputs.n
        for i, ex in enumerate(got):
            assert ex["inputs"].tolist() == inputs.row(i).tolist() + [layout.eos_id]
            assert ex["targets"].tolist() == targets.row(i).tolist() + [layout.eos_id]
            assert ex["inputs"].dtype == np.int32


def test_lime_registers_three_tasks_and_an_equal_rate_mixture(tmp_path):
    from pipeline_lib.data.seqio_tasks import register_corpus

    layout = laptop_layout(64)
    spec = CorpusSpec(task="lime", seed=1, train_examples=20, valid_examples=5,
                      generate_factor=1.2, length_range=(4, 12), block_size=64,
                      params={"num_upper": 6, "num_lower": 6, "num_math": 6})
    build_corpus(spec, layout, tmp_path / "lime")
    names = register_corpus(tmp_path / "lime")
    assert names[-1] == "wu2022_lime"
    assert sorted(names[:3]) == ["wu2022_lime_abduct", "wu2022_lime_deduct", "wu2022_lime_induct"]
    mixture = seqio.get_mixture_or_task("wu2022_lime")
    assert sorted(t.name for t in mixture.tasks) == sorted(names[:3])
    assert len({mixture.get_rate(t) for t in mixture.tasks}) == 1
