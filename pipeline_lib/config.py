"""Load and validate the workflow config: one schema, one set of semantic checks, one message.

Snakemake (`workflow/rules/common.smk`) and the CLI both call `validate_config`, so a bad key
fails the same way everywhere, before any compute: the message names the key path, the bad
value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(
    os.environ.get(
        "PIPELINE_CONFIG_SCHEMA",
        Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml",
    )
)


class ConfigError(ValueError):
    """A config value that the workflow cannot run with."""


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "enum":
        allowed = ", ".join(map(str, schema.get("enum", [])))
        return f"{where}: {error.instance!r} is not allowed; allowed values: {allowed}"
    if error.validator == "additionalProperties":
        allowed = ", ".join(sorted(schema.get("properties", {})))
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return f"{where}: unknown key(s) {', '.join(extra)}; allowed keys: {allowed}"
    if error.validator == "type":
        return f"{where}: {error.instance!r} has the wrong type; expected {schema.get('type')}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    return f"{where}: {error.message}"


def _fill_defaults(schema: dict, value: Any) -> Any:
    """Insert schema defaults for missing object keys (recursively)."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        return value
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = copy.deepcopy(sub["default"])
        if key in value:
            value[key] = _fill_defaults(sub, value[key])
    return value


def _semantic_checks(cfg: dict) -> None:
    from pipeline_lib.data.synthetic import SIMPLE_TASKS

    corpora = cfg["corpora"]
    lo, hi = corpora["length_range"]
    if lo > hi:
        raise ConfigError(
            f"corpora.length_range: min length {lo} is above max length {hi}; "
            "allowed: 4 <= min and 2*min+1 <= max"
        )
    simple = [t for t in corpora["tasks"] if t in SIMPLE_TASKS]
    if simple and (lo < 4 or hi < 2 * lo + 1):
        raise ConfigError(
            f"corpora.length_range: [{lo}, {hi}] cannot produce every simple task; "
            "allowed: 4 <= min and 2*min+1 <= max (e.g. [10, 220])"
        )
    needed = corpora["train_examples"] + corpora["valid_examples"]
    generated = int(corpora["train_examples"] * corpora["generate_factor"])
    if generated < needed:
        raise ConfigError(
            f"corpora.generate_factor: {corpora['generate_factor']} generates {generated} "
            f"examples, fewer than train_examples + valid_examples = {needed}; allowed: "
            f">= {needed / corpora['train_examples']:.4f}"
        )
    for section in ("lime", "nonsense_summary", "nesting_language"):
        for key, value in corpora[section].items():
            if key.endswith("_range") and value[0] > value[1]:
                raise ConfigError(
                    f"corpora.{section}.{key}: min {value[0]} is above max {value[1]}; "
                    "allowed: [min, max] with min <= max"
                )
    unknown = [t for t in cfg["pretrain"]["tasks"] if t not in corpora["tasks"]]
    if unknown:
        raise ConfigError(
            f"pretrain.tasks: {', '.join(unknown)} not in corpora.tasks; "
            f"allowed: {', '.join(corpora['tasks'])}"
        )
    vocab = cfg["vocab"]
    if vocab["layout"] == "paper" and not vocab.get("spm_model"):
        needs = [t for t in corpora["tasks"] if t in ("count", "length", "nonsense_summary")]
        if needs:
            raise ConfigError(
                f"vocab.spm_model: the paper layout needs the T5 SentencePiece model for "
                f"{', '.join(needs)} (numerals / text); set it to a local path or a gs:// URI, "
                "or use vocab.layout: laptop"
            )
    if vocab["layout"] == "laptop":
        d = vocab["data_vocab_size"]
        if simple and d < hi // 2:
            raise ConfigError(
                f"vocab.data_vocab_size: {d} is too small for set operations of length {hi}; "
                f"allowed: >= {hi // 2}"
            )
        pairs = corpora["nesting_language"]["num_pairs"]
        if "nesting_language" in corpora["tasks"] and pairs is not None and d < 2 * pairs:
            raise ConfigError(
                f"vocab.data_vocab_size: {d} cannot hold the {2 * pairs} symbols of "
                f"corpora.nesting_language.num_pairs = {pairs}; allowed: >= {2 * pairs}"
            )
        if "lime" in corpora["tasks"]:
            lime = corpora["lime"]
            need = lime["num_upper"] + lime["num_lower"] + lime["num_math"]
            if d < need:
                raise ConfigError(
                    f"vocab.data_vocab_size: {d} is smaller than the {need} distinct LIME "
                    f"symbols (corpora.lime); allowed: >= {need}"
                )


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate (and fill defaults into) a config dict; raise ConfigError with one message."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    cfg = _fill_defaults(load_schema(), copy.deepcopy(cfg))
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {_describe(best)}")
    try:
        _semantic_checks(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


def load_config(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line}: not valid YAML ({getattr(e, 'problem', e)})") from None
    return validate_config(cfg, source=str(path))
