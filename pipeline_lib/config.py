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

from pipeline_lib.errors import ConfigError

SCHEMA_PATH = Path(
    os.environ.get(
        "PIPELINE_CONFIG_SCHEMA",
        Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml",
    )
)


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


def _corpora_checks(cfg: dict) -> None:
    from pipeline_lib.data.synthetic import SIMPLE_TASKS, SPECIAL_CORPORA

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
    for section in SPECIAL_CORPORA:
        for key, value in corpora[section].items():
            if key.endswith("_range") and value[0] > value[1]:
                raise ConfigError(
                    f"corpora.{section}.{key}: min {value[0]} is above max {value[1]}; "
                    "allowed: [min, max] with min <= max"
                )
    unknown = [t for t in cfg["transfer"]["pretrain"]["tasks"] if t not in corpora["tasks"]]
    if unknown:
        raise ConfigError(
            f"transfer.pretrain.tasks: {', '.join(unknown)} not in corpora.tasks; "
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


def _experiment_checks(cfg: dict, given: set[str]) -> None:
    """Fine-tuning and tables: every name must refer to something the config defines
    (cross-section checks only when the sections were given)."""
    from pipeline_lib.experiments.transfer.finetune import OVERRIDABLE

    downstream = cfg["downstream"]
    from pipeline_lib.data.downstream import ADAPTERS as adapters
    for name, entry in downstream.items():
        if entry["adapter"] not in adapters:
            raise ConfigError(
                f"downstream.{name}.adapter: unknown adapter {entry['adapter']!r}; "
                f"allowed: {', '.join(sorted(adapters))}"
            )
        # entries of a mapping get no schema defaults: source/loader may be absent
        if not entry["adapter"].startswith("pcfg_") and not entry.get("source") and (
            entry.get("loader", "local") == "local"
        ):
            raise ConfigError(
                f"downstream.{name}.source: the {entry['adapter']} adapter reads a local "
                "directory or gs:// URI; set source (or loader: tfds / hf)"
            )
    if "transfer.finetune" not in given:
        return
    finetune = cfg["transfer"]["finetune"]
    for i, task in enumerate(finetune["tasks"]):
        if task not in downstream:
            raise ConfigError(
                f"transfer.finetune.tasks[{i}]: {task!r} is not defined under downstream; "
                f"allowed: {', '.join(downstream) or '(none)'}"
            )
    for task, override in finetune["overrides"].items():
        if task not in downstream:
            raise ConfigError(f"transfer.finetune.overrides.{task}: not a downstream task; "
                              f"allowed: {', '.join(downstream)}")
        for key in override:
            if key not in OVERRIDABLE:
                raise ConfigError(f"transfer.finetune.overrides.{task}.{key}: unknown key; "
                                  f"allowed: {', '.join(OVERRIDABLE)}")
    if "transfer.tables" not in given:
        return
    pretrained = cfg["transfer"]["pretrain"]["tasks"]
    tables = cfg["transfer"]["tables"]
    for key, names in (("table1.rows", tables["table1"]["rows"]),
                       ("table2.sources", tables["table2"]["sources"])):
        for name in names or []:
            if name not in pretrained:
                raise ConfigError(f"transfer.tables.{key}: {name!r} is not in transfer.pretrain.tasks; "
                                  f"allowed: {', '.join(pretrained) or '(none)'}")
    from pipeline_lib.experiments.transfer.init_schemes import INIT_SCHEMES

    for i, scheme in enumerate(tables["table2"]["schemes"]):
        if scheme not in INIT_SCHEMES:
            raise ConfigError(f"transfer.tables.table2.schemes[{i}]: unknown init scheme {scheme!r}; "
                              f"allowed: {', '.join(INIT_SCHEMES)}")


def _schedule_checks(where: str, opt: dict, steps: int) -> None:
    if opt.get("schedule") in ("linear", "polynomial") and opt.get("warmup_steps", 0) >= steps:
        raise ConfigError(
            f"{where}.warmup_steps: {opt['warmup_steps']} must be below the {steps} training "
            f"steps of a {opt['schedule']} schedule"
        )


def _training_checks(cfg: dict) -> None:
    """Schedules that fit their step counts, export steps inside the run, known size keys."""
    for stage in ("pretrain", "finetune"):
        section = cfg["transfer"][stage]
        _schedule_checks(f"transfer.{stage}.optimizer", section["optimizer"], section["steps"])
    _schedule_checks("primer.optimizer", cfg["primer"]["optimizer"], cfg["primer"]["steps"])
    liu = cfg["implicit_bias"]
    for name, opt in liu["optimizers"].items():
        _schedule_checks(f"implicit_bias.optimizers.{name}", opt, liu["steps"])
    late = [s for s in liu["checkpoints"] if s > liu["steps"]]
    if late:
        raise ConfigError(f"implicit_bias.checkpoints: step {late[0]} is beyond implicit_bias.steps = {liu['steps']}")
    target = liu["trace"]["enlarge_to"]
    if target is not None and target not in liu["sizes"]:
        raise ConfigError(f"implicit_bias.trace.enlarge_to: {target!r} is not a key of implicit_bias.sizes; "
                          f"allowed: {', '.join(liu['sizes'])}")
    if liu["trace"]["min_samples"] > liu["trace"]["max_samples"]:
        raise ConfigError("implicit_bias.trace.min_samples: must not exceed implicit_bias.trace.max_samples")


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate (and fill defaults into) a config dict; raise ConfigError with one message."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    # A rule's --spec carries only the sections that rule reads; checks of a section that
    # was not given are skipped (its schema defaults are filled in but describe nothing real).
    transfer = cfg.get("transfer")
    given = set(cfg) | {f"transfer.{k}" for k in (transfer if isinstance(transfer, dict) else {})}
    if "tasks" not in (cfg.get("corpora") or {}):
        given.discard("corpora")  # e.g. only corpora.nonsense_summary, for the vocabulary
    cfg = _fill_defaults(load_schema(), copy.deepcopy(cfg))
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {_describe(best)}")
    try:
        if "corpora" in given:
            _corpora_checks(cfg)
        _experiment_checks(cfg, given)
        _training_checks(cfg)
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
