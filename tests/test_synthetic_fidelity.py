"""The task functions map every original input to the original target (Wu et al. samples).

The samples are the 10-example files of the original generator (T5 ids). All 18 tasks are
checked; for count and length, whose numerals need the T5 SentencePiece model, the computed
integers must map consistently onto the sample targets and agree with the three numerals
the reference lists (22, 74, 220).
"""

import ast

import pytest

from pipeline_lib.data.ragged import Ragged
from pipeline_lib.data.synthetic import SIMPLE_TASKS, split_arguments, strip_prefix
from pipeline_lib.data.synthetic_reference import REFERENCE
from pipeline_lib.data.vocab import paper_layout

PAPER = paper_layout()
NUMERAL_TASKS = {"count", "length"}
KNOWN_T5_NUMERALS = {22: [1630], 74: [4581], 220: [204, 1755]}


def _read(path):
    rows = [line.split("\t") for line in path.read_text().splitlines() if line]
    inputs = [ast.literal_eval(a) for a, _ in rows]
    targets = [ast.literal_eval(b) for _, b in rows]
    return inputs, targets


def _arguments(task, inputs):
    data = strip_prefix(task, Ragged.from_rows(inputs), PAPER)
    return split_arguments(task, data, PAPER)


@pytest.mark.parametrize("task_id", [t for t in SIMPLE_TASKS if t not in NUMERAL_TASKS])
def test_vectorised_task_function_reproduces_samples(task_id, wu_samples_dir):
    task = SIMPLE_TASKS[task_id]
    inputs, targets = _read(wu_samples_dir / f"{task.internal_name}.txt")
    assert len(inputs) == 10
    args = _arguments(task, inputs)
    got = task.target(*args, PAPER).fill_empty(PAPER.empty_marker).to_rows()
    assert got == targets


@pytest.mark.parametrize("task_id", [t for t in SIMPLE_TASKS if t not in NUMERAL_TASKS])
def test_reference_task_function_reproduces_samples(task_id, wu_samples_dir):
    task = SIMPLE_TASKS[task_id]
    inputs, targets = _read(wu_samples_dir / f"{task.internal_name}.txt")
    args = _arguments(task, inputs)
    fn = REFERENCE[task_id][1]
    for i, expected in enumerate(targets):
        row_args = [a.row(i).tolist() for a in args]
        assert (fn(*row_args, PAPER) or [PAPER.empty_marker]) == expected


@pytest.mark.parametrize("task_id", sorted(NUMERAL_TASKS))
def test_numeral_tasks_are_consistent_with_samples(task_id, wu_samples_dir):
    task = SIMPLE_TASKS[task_id]
    inputs, targets = _read(wu_samples_dir / f"{task.internal_name}.txt")
    args = _arguments(task, inputs)
    if task_id == "length":
        values = args[0].lengths.tolist()
    else:
        values = [
            sum(1 for t in s if t == q[0])
            for s, q in zip(args[0].to_rows(), args[1].to_rows(), strict=True)
        ]
    numeral_of = {}
    for n, target in zip(values, targets, strict=True):
        assert numeral_of.setdefault(n, target) == target, f"{n} maps to two numerals"
    # distinct integers have distinct numerals
    assert len({tuple(t) for t in numeral_of.values()}) == len(numeral_of)
    for n, ids in KNOWN_T5_NUMERALS.items():
        if n in numeral_of:
            assert numeral_of[n] == ids
    assert any(n in numeral_of for n in KNOWN_T5_NUMERALS)


@pytest.mark.parametrize("task_id", sorted(SIMPLE_TASKS))
def test_sample_prefixes_match_layout(task_id, wu_samples_dir):
    task = SIMPLE_TASKS[task_id]
    inputs, _ = _read(wu_samples_dir / f"{task.internal_name}.txt")
    head = list(PAPER.prefix(task.internal_name)) + [PAPER.task_input_divider]
    for row in inputs:
        assert row[: len(head)] == head
        data = row[len(head) :]
        assert 10 <= len(data) <= 220  # the original length rule
