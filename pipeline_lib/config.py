"""Load and validate the workflow config: one schema, one set of semantic checks, one message.

Snakemake (`workflow/rules/common.smk`) and the CLI both call `validate_config`, so a bad key
fails the same way everywhere, before any compute: the message names the key path, the bad
value and what is allowed.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from pipeline_lib.errors import ConfigError
from pipeline_lib.files import text_problem

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


# Every integer of a config is a count, a size or a seed: none needs more than 31 bits, and
# seeds feed uint32 SeedSequence words / jax.random.key (a larger value is a typo, not a seed).
MAX_INT = 2**31 - 1


def _scan_values(value: Any, path: tuple = ()) -> None:
    """Structural checks JSON Schema cannot express: string keys, finite numbers, bounded
    integers (each failure names the key path)."""
    where = _key_path(path)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(
                    f"{_key_path((*path, str(key)))}: the key {key!r} is of type "
                    f"{type(key).__name__}, not a string; quote it"
                )
            _scan_values(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _scan_values(item, (*path, i))
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
        raise ConfigError(f"{where}: {value} is out of range; allowed: |value| <= {MAX_INT}")


def _strict_integers() -> type:
    """The schema's validator with `integer` meaning a Python int (JSON Schema's own also
    accepts 4.0, which later fails as an array size or a range bound)."""
    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    )
    return jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)


# The model configs are built with a stand-in vocabulary: the real one comes from the data at
# run time, and no shape check depends on it.
_STAND_IN_VOCAB = 512


def _model_checks(cfg: dict, given: set[str]) -> None:
    """Every model a job will build, built now from the config alone (presets, overrides,
    shapes; the enlargement of the trace), so a typo fails before any job runs, not after the
    upstream jobs spent their compute."""
    if "transfer.pretrain" in given or "transfer.finetune" in given:
        from pipeline_lib.models.configs import t5_config

        model = cfg["transfer"]["pretrain"]["model"]
        t5_config(model["preset"], prefix="transfer.pretrain.model.overrides",
                  **{"vocab_size": _STAND_IN_VOCAB, **model.get("overrides", {})})
    if "primer" in given:  # its models, budget, baselines and data path
        from pipeline_lib.experiments.primer.checks import check_primer

        check_primer(cfg["primer"])
    if "implicit_bias" in given:
        from pipeline_lib.evaluate.enlarge import EnlargeError, check_enlargeable
        from pipeline_lib.experiments.implicit_bias.model import bert_for_size

        section = cfg["implicit_bias"]
        sizes = {name: bert_for_size(section, name, _STAND_IN_VOCAB) for name in section["sizes"]}
        target = section["trace"]["enlarge_to"]
        if target in sizes:
            for name, size in sizes.items():
                try:
                    check_enlargeable(size, sizes[target])
                except EnlargeError as e:
                    raise ConfigError(
                        f"implicit_bias.sizes.{name}: cannot be embedded exactly into "
                        f"implicit_bias.trace.enlarge_to = {target!r}: {e}"
                    ) from None


_COORDINATOR = re.compile(r"^(auto|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}|[A-Za-z0-9_.-]+:[0-9]{1,5})$")


def check_distributed(
    coordinator: str | None, num_processes: int | None, process_id: int | None = None,
    keys: tuple[str, str, str] = (
        "execution.coordinator", "execution.num_processes", "--process-id"),
) -> None:
    """A multi-process setting JAX can start from, or one ConfigError naming the key / flag.

    Shared by the config checks and the CLI's --coordinator/--num-processes/--process-id, so a
    typo fails before a process waits `initialization_timeout_s` for partners that never come.
    """
    coordinator_key, processes_key, id_key = keys
    if coordinator is None:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            given = processes_key if num_processes not in (None, 1) else id_key
            raise ConfigError(f"{given}: a multi-process run needs {coordinator_key}: "
                              "host:port of process 0, or auto")
        return
    if not _COORDINATOR.match(coordinator):
        raise ConfigError(f"{coordinator_key}: {coordinator!r} is not host:port (or auto)")
    if coordinator != "auto" and not 0 < int(coordinator.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"{coordinator_key}: {coordinator!r}: port must be 1..65535")
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"{id_key}: {process_id} is not in 0..{num_processes - 1} "
                          f"({processes_key} = {num_processes})")


def validate_config(cfg: dict, source: str = "config") -> dict:
    """Validate (and fill defaults into) a config dict; raise ConfigError with one message."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values")
    try:
        _scan_values(cfg)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    # A rule's --spec carries only the sections that rule reads; checks of a section that
    # was not given are skipped (its schema defaults are filled in but describe nothing real).
    transfer = cfg.get("transfer")
    given = set(cfg) | {f"transfer.{k}" for k in (transfer if isinstance(transfer, dict) else {})}
    if not isinstance(cfg.get("corpora"), dict) or "tasks" not in cfg["corpora"]:
        given.discard("corpora")  # e.g. only corpora.nonsense_summary, for the vocabulary
    cfg = _fill_defaults(load_schema(), copy.deepcopy(cfg))
    validator = _strict_integers()(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        best = jsonschema.exceptions.best_match(errors)
        raise ConfigError(f"{source}: {_describe(best)}")
    try:
        if "corpora" in given:
            _corpora_checks(cfg)
        _experiment_checks(cfg, given)
        _training_checks(cfg)
        _model_checks(cfg, given)
        check_distributed(cfg["execution"]["coordinator"], cfg["execution"]["num_processes"])
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (YAML's default: last wins)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # reported by the constructor below
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None,
                f"duplicate key {key!r} (first given on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def _yaml_error(path: Path, e: yaml.YAMLError) -> ConfigError:
    """file:line: what, from the problem mark (where it was noticed) or the context mark."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    context = getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"{path}:{mark.line + 1}" if mark else f"{path}"
    opened = ""
    if context is not None and mark is not None and context.line != mark.line:
        opened = f" ({getattr(e, 'context', 'started')} on line {context.line + 1})"
    return ConfigError(f"{where}: not valid YAML: {problem}{opened}")


def read_config_file(path: str | os.PathLike) -> Any:
    """The parsed YAML of a config file; every failure is one ConfigError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = path.read_bytes()
    problem = text_problem(data)
    if problem is not None:
        raise ConfigError(f"{path}:{problem[0]}: {problem[1]}")
    text = data.decode("utf-8")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise _yaml_error(path, e) from None


def load_config(path: str | os.PathLike) -> dict:
    return validate_config(read_config_file(path), source=str(path))
