"""The 18 simple synthetic pre-training tasks of Wu, Li & Liang (2022): registry and generator.

Input layout (reference §1.1): prefix ids of the *internal* task name, <extra_id_0>, then the
data part (arg1, or arg1 <extra_id_2> arg2). Targets are the task function of the arguments,
with an empty output replaced by <extra_id_3>. EOS is not stored; loaders append it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from pipeline_lib.data import synthetic_samplers as S
from pipeline_lib.data import synthetic_targets as T
from pipeline_lib.data.ragged import Ragged, concat_rows
from pipeline_lib.data.vocab import VocabLayout


@dataclasses.dataclass(frozen=True)
class SimpleTask:
    id: str  # paper / seqio id
    internal_name: str  # folder name and prefix text in the original code
    sampler: Callable[..., tuple[Ragged, ...]]
    target: Callable[..., Ragged]

    @property
    def arity(self) -> int:
        return self.target.__code__.co_argcount - 1


SIMPLE_TASKS: dict[str, SimpleTask] = {
    t.id: t
    for t in [
        SimpleTask("identity", "copy", S.uniform_sequence, T.identity),
        SimpleTask("reverse", "reverse", S.uniform_sequence, T.reverse),
        SimpleTask("duplicate", "duplicate", S.uniform_sequence, T.duplicate),
        SimpleTask("first_token", "first_char", S.uniform_sequence, T.first_token),
        SimpleTask("last_token", "last_char", S.uniform_sequence, T.last_token),
        SimpleTask("length", "length", S.uniform_sequence, T.length),
        SimpleTask("set", "set", S.shuffled_runs_sequence, T.set_),
        SimpleTask("deduplicate", "deduplicate", S.runs_sequence, T.deduplicate),
        SimpleTask("longest_word", "longest_word", S.words_sequence, T.longest_word),
        SimpleTask("count", "count", S.count_sequence, T.count),
        SimpleTask("search", "search", S.search_sequence, T.search),
        SimpleTask("delete", "delete", S.delete_sequence, T.delete),
        SimpleTask("replace", "replace", S.replace_sequence, T.replace),
        SimpleTask("sort", "sort", S.sort_sequence, T.sort),
        SimpleTask("union", "union", S.set_op_sequences, T.union),
        SimpleTask("intersect", "intersect", S.set_op_sequences, T.intersect),
        SimpleTask("set1_minus_set2", "set_1_minus_2", S.set_op_sequences, T.set1_minus_set2),
        SimpleTask("set2_minus_set1", "set_2_minus_1", S.set_op_sequences, T.set2_minus_set1),
    ]
}

# The three corpora with generators of their own (and a config section of parameters each).
SPECIAL_CORPORA = ("lime", "nonsense_summary", "nesting_language")
INTERNAL_TO_ID = {t.internal_name: t.id for t in SIMPLE_TASKS.values()}


def sampler_spec(layout: VocabLayout, length_range: tuple[int, int]) -> S.SamplerSpec:
    return S.SamplerSpec(
        lo=layout.data_lo,
        hi=layout.data_hi,
        min_len=int(length_range[0]),
        max_len=int(length_range[1]),
        word_divider=layout.word_divider,
    )


def split_arguments(task: SimpleTask, data: Ragged, layout: VocabLayout) -> tuple[Ragged, ...]:
    """Inverse of the data layout: data part -> arguments (at the first argument divider)."""
    if task.arity == 1:
        return (data,)
    is_div = data.values == layout.arg_divider
    rows = data.row_ids()
    div_count = np.bincount(rows[is_div], minlength=data.n)
    if (div_count == 0).any():
        raise ValueError(f"{task.id}: an input has no argument divider {layout.arg_divider}")
    # first divider per row
    first_div = np.full(data.n, -1, np.int64)
    div_pos = np.nonzero(is_div)[0]
    first_div[rows[div_pos][::-1]] = div_pos[::-1]
    pos = np.arange(data.values.size)
    before = pos < first_div[rows]
    after = pos > first_div[rows]
    return data.mask(before), data.mask(after)


def task_targets(task: SimpleTask, args: tuple[Ragged, ...], layout: VocabLayout) -> Ragged:
    return task.target(*args, layout).fill_empty(layout.empty_marker)


def add_prefix(task: SimpleTask, data: Ragged, layout: VocabLayout) -> Ragged:
    head = list(layout.prefix(task.internal_name)) + [layout.task_input_divider]
    return concat_rows(Ragged.constant(head, data.n, dtype=data.values.dtype), data)


def strip_prefix(task: SimpleTask, inputs: Ragged, layout: VocabLayout) -> Ragged:
    """Inputs -> data part, checking that every row starts with the task's prefix."""
    head = np.asarray(list(layout.prefix(task.internal_name)) + [layout.task_input_divider])
    if (inputs.lengths < head.size).any():
        raise ValueError(f"{task.id}: an input is shorter than its prefix")
    idx = inputs.starts[:, None] + np.arange(head.size)[None, :]
    if not (inputs.values[idx] == head[None, :]).all():
        raise ValueError(f"{task.id}: an input does not start with the prefix {head.tolist()}")
    keep = inputs.positions() >= head.size
    return inputs.mask(keep)


def generate_simple(
    task_id: str,
    rng: np.random.Generator,
    n: int,
    layout: VocabLayout,
    length_range: tuple[int, int],
) -> tuple[Ragged, Ragged]:
    """n examples (inputs, targets) of one simple task, all drawn from `rng`."""
    task = SIMPLE_TASKS[task_id]
    args = task.sampler(rng, n, sampler_spec(layout, length_range))
    targets = task_targets(task, args, layout)
    inputs = add_prefix(task, S.join_arguments(args, layout.arg_divider), layout)
    return inputs, targets
