"""A straightforward per-example pure-Python generator of the 18 simple tasks.

It follows the original generator's control flow one example at a time (Python `random`, list
operations), with a seeded `random.Random` instead of global state. It is the oracle the
vectorised code in `synthetic_samplers.py` / `synthetic_targets.py` is tested against, and the
named baseline of `benchmarks/corpora.py`. It is not used by the workflow.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from pipeline_lib.data.vocab import VocabLayout


# --- task functions: arguments (lists of ids) -> target list --------------------------------
def t_identity(s, L):
    return list(s)


def t_reverse(s, L):
    return s[::-1]


def t_duplicate(s, L):
    return [t for t in s for _ in range(2)]


def t_first_token(s, L):
    return [s[0]]


def t_last_token(s, L):
    return [s[-1]]


def t_length(s, L):
    return list(L.number(len(s)))


def t_set(s, L):
    seen, out = set(), []
    for t in s:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def t_deduplicate(s, L):
    out = []
    for t in s:
        if not out or out[-1] != t:
            out.append(t)
    return out


def t_longest_word(s, L):
    best, cur = [], []
    for t in s:
        if t == L.word_divider:
            cur = []
            continue
        cur.append(t)
        if len(cur) > len(best):  # strictly longer: ties keep the earlier word
            best = list(cur)
    return best


def t_count(s, q, L):
    return list(L.number(sum(1 for t in s if t == q[0])))


def _index(s, q):
    for i in range(len(s) - len(q) + 1):
        if s[i : i + len(q)] == q:
            return i
    return -1


def t_search(s, q, L):
    return list(L.yes) if _index(s, q) != -1 else list(L.no)


def t_delete(s, q, L):
    i = _index(s, q)
    return list(s) if i == -1 else s[:i] + s[i + len(q) :]


def t_replace(s, q, L):
    table = {q[i]: q[i + 1] for i in range(0, len(q), 2)}
    return [table.get(t, t) for t in s]


def t_sort(s, order, L):
    rank = {tok: i for i, tok in enumerate(order)}
    return sorted(s, key=lambda tok: rank[tok])


def t_union(a, b, L):
    return list(set(a).union(set(b)))


def t_intersect(a, b, L):
    return list(set(a).intersection(set(b)))


def t_set1_minus_set2(a, b, L):
    return list(set(a) - set(b))


def t_set2_minus_set1(a, b, L):
    return list(set(b) - set(a))


# --- samplers: random.Random -> arguments -----------------------------------------------------
def _partition(r: random.Random, n: int, k: int, nonzero: bool) -> list[int]:
    """multinomial(n, uniform over k bins), optionally +1 per bin after drawing n-k."""
    parts = [0] * k
    for _ in range(n - k if nonzero else n):
        parts[r.randrange(k)] += 1
    return [p + 1 for p in parts] if nonzero else parts


def _choices(r: random.Random, lo: int, hi: int, k: int) -> list[int]:
    return [r.randrange(lo, hi) for _ in range(k)]


def s_uniform(r, lo, hi, a, b, L):
    return (_choices(r, lo, hi, r.randint(a, b)),)


def _runs(r, lo, hi, n, pick_from=None, shuffle=False):
    k = r.randint(1, n) if pick_from is None else len(pick_from)
    sizes = _partition(r, n, k, nonzero=True)
    toks = _choices(r, lo, hi, k) if pick_from is None else r.choices(pick_from, k=k)
    out = [t for t, size in zip(toks, sizes) for _ in range(size)]
    if shuffle:
        r.shuffle(out)
    return out


def s_runs(r, lo, hi, a, b, L):
    return (_runs(r, lo, hi, r.randint(a, b)),)


def s_shuffled_runs(r, lo, hi, a, b, L):
    return (_runs(r, lo, hi, r.randint(a, b), shuffle=True),)


def s_words(r, lo, hi, a, b, L):
    w = r.randint(1, b // 2)
    non_sep = r.randint(max(a - (w - 1), w), b - (w - 1))
    out = []
    for i, size in enumerate(_partition(r, non_sep, w, nonzero=True)):
        out += _choices(r, lo, hi, size)
        if i < w - 1:
            out.append(L.word_divider)
    return (out,)


def s_count(r, lo, hi, a, b, L):
    n = r.randint(a - 2, b - 2)
    q = r.randrange(lo, hi)
    k = r.randint(0, n)
    seq = [q] * k + _choices(r, lo, hi, n - k)
    r.shuffle(seq)
    return seq, [q]


def _positive(r, lo, hi, a, b):
    max_total = b - 1
    q_len = r.randint(1, max_total // 3)
    s_len = r.randint(2 * q_len, max_total - q_len)
    q = _choices(r, lo, hi, q_len)
    n_occ = r.randint(1, s_len // q_len)
    seq = []
    for i, gap in enumerate(_partition(r, s_len - n_occ * q_len, n_occ + 1, nonzero=False)):
        seq += _choices(r, lo, hi, gap)
        if i < n_occ:
            seq += q
    return seq, q


def _negative(r, lo, hi, a, b):
    if r.random() < 0.01:
        q_len = r.randint(a + 1, b)
        return _choices(r, lo, hi, r.randint(0, q_len - 1)), _choices(r, lo, hi, q_len)
    s_len = r.randint(a, b)
    q_len = r.randint(a, s_len)
    while True:
        q, s = _choices(r, lo, hi, q_len), _choices(r, lo, hi, s_len)
        if str(q)[1:-1] not in str(s):
            return s, q


def s_search(r, lo, hi, a, b, L):
    return _positive(r, lo, hi, a, b) if r.random() > 0.5 else _negative(r, lo, hi, a, b)


def s_delete(r, lo, hi, a, b, L):
    return _positive(r, lo, hi, a, b) if r.random() > 0.25 else _negative(r, lo, hi, a, b)


def s_replace(r, lo, hi, a, b, L):
    seq = _choices(r, lo, hi, r.randint(a - 3, b - 3))
    key = r.choice(sorted(set(seq)))
    return seq, [key, r.randrange(lo, hi)]


def s_sort(r, lo, hi, a, b, L):
    max_total = b - 1
    o_len = r.randint(a // 2, max_total // 2)
    order = _choices(r, lo, hi, o_len)
    s_len = r.randint(o_len, max_total - o_len)
    return _runs(r, lo, hi, s_len, pick_from=order, shuffle=True), order


def s_set_op(r, lo, hi, a, b, L):
    total = r.randint(a - 1, b - 1)
    n1 = r.randint(0, total)
    pool = r.sample(range(lo, hi), total // 2)
    return r.choices(pool, k=n1), r.choices(pool, k=total - n1)


REFERENCE: dict[str, tuple[Callable, Callable]] = {
    "identity": (s_uniform, t_identity),
    "reverse": (s_uniform, t_reverse),
    "duplicate": (s_uniform, t_duplicate),
    "first_token": (s_uniform, t_first_token),
    "last_token": (s_uniform, t_last_token),
    "length": (s_uniform, t_length),
    "set": (s_shuffled_runs, t_set),
    "deduplicate": (s_runs, t_deduplicate),
    "longest_word": (s_words, t_longest_word),
    "count": (s_count, t_count),
    "search": (s_search, t_search),
    "delete": (s_delete, t_delete),
    "replace": (s_replace, t_replace),
    "sort": (s_sort, t_sort),
    "union": (s_set_op, t_union),
    "intersect": (s_set_op, t_intersect),
    "set1_minus_set2": (s_set_op, t_set1_minus_set2),
    "set2_minus_set1": (s_set_op, t_set2_minus_set1),
}


def reference_example(
    task_id: str, r: random.Random, layout: VocabLayout, length_range: tuple[int, int],
    internal_name: str,
) -> tuple[list[int], list[int]]:
    """One (inputs, targets) example, with the original's rejection loop on the data length."""
    sampler, fn = REFERENCE[task_id]
    a, b = length_range
    while True:
        args = sampler(r, layout.data_lo, layout.data_hi, a, b, layout)
        data = args[0] if len(args) == 1 else args[0] + [layout.arg_divider] + args[1]
        if a <= len(data) <= b:
            break
    target = fn(*args, layout) or [layout.empty_marker]
    prefix = list(layout.prefix(internal_name)) + [layout.task_input_divider]
    return prefix + data, target
