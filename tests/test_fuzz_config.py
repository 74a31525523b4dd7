"""Property-based fuzzing of configs derived from config.yaml: every mutation is either valid
or rejected with one bounded ConfigError line that names a key path; never another exception.

Derandomised, with a fixed example budget, so CI runs the same cases every time (a few seconds).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.config import ConfigError, validate_config

REPO = Path(__file__).resolve().parents[1]
BASE = yaml.safe_load((REPO / "config.yaml").read_text())


def _paths(node, prefix=()):
    """Every key path of the config (dict keys and list indices)."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(BASE) if p]
HOSTILE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 10**30, -(10**30), 4.0, True, None, "",
                     "x" * 5000, [], {}, [1, "a"], {"unknown_key": 1}, -1, 0, 2**31]),
    st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
)


def _set(cfg, path, value):
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _check(cfg):
    try:
        validate_config(cfg)
    except ConfigError as e:
        msg = str(e)
        assert "\n" not in msg and len(msg) < 2000, msg[:300]
        assert msg.startswith("config: "), msg[:200]
        return "rejected"
    return "valid"


@settings(max_examples=300, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=HOSTILE)
def test_one_hostile_value_anywhere_is_valid_or_one_clear_message(path, value):
    cfg = copy.deepcopy(BASE)
    _set(cfg, path, value)
    _check(cfg)


@settings(max_examples=100, derandomize=True, deadline=None)
@given(path=st.sampled_from([p for p in PATHS if isinstance(p[-1], str)]),
       key=st.one_of(st.text(min_size=1, max_size=12), st.integers(), st.booleans()))
def test_unknown_or_non_string_keys_at_every_level_are_named(path, key):
    cfg = copy.deepcopy(BASE)
    node = cfg
    for part in path[:-1]:
        node = node[part]
    if not isinstance(node, dict) or key in node:
        return
    node[key] = 1
    _check(cfg)
