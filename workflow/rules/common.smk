# Shared helpers: config validation, wildcard constraints, params functions.
import json
from pathlib import Path

from pipeline_lib.config import ConfigError, validate_config

try:
    # One schema and one set of semantic checks for Snakemake and the CLI; defaults filled in.
    config.update(validate_config(config, source="config"))
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None


TASKS = config["corpora"]["tasks"]


wildcard_constraints:
    task="|".join(TASKS),


def corpus_spec_json(wildcards):
    """The part of the config one corpus depends on, as JSON.

    Passed as a param, so Snakemake's params rerun trigger regenerates exactly the corpora
    whose settings changed (and nothing when an unrelated section changes).
    """
    corpora = config["corpora"]
    keys = ["train_examples", "valid_examples", "generate_factor", "length_range", "block_size"]
    spec = {k: corpora[k] for k in keys}
    spec["tasks"] = [wildcards.task]
    if wildcards.task in ("lime", "nonsense_summary", "nesting_language"):
        spec[wildcards.task] = corpora[wildcards.task]
    if config["vocab"]["layout"] == "laptop":
        # the laptop word table holds the nonsense words (see pipeline_lib/data/layout_config.py)
        spec["nonsense_summary"] = corpora["nonsense_summary"]
    return json.dumps(
        {"seed": config["seed"], "vocab": config["vocab"], "corpora": spec}, sort_keys=True
    )


PCFG = config["pcfg"]
PCFG_TASKS = PCFG["downstream"]["tasks"]


def pcfg_grammar_id():
    """Results key of the grammar: the file's stem, or generated_seed<N>."""
    if PCFG["grammar"]:
        return Path(PCFG["grammar"]).name.split(".")[0]
    return f"generated_seed{PCFG['generate']['seed']}"


PCFG_GRAMMAR = pcfg_grammar_id()


wildcard_constraints:
    grammar=PCFG_GRAMMAR,
    pcfg_task="|".join(PCFG_TASKS),


def _pcfg_spec(*sections):
    return json.dumps({s: PCFG[s] for s in sections}, sort_keys=True)


# Each PCFG rule gets only the config sections it reads, so the params rerun trigger
# regenerates exactly what a config change affects.
def pcfg_grammar_spec(wildcards):
    return _pcfg_spec("grammar", "grammar_format", "allow_unreachable", "generate")


def pcfg_pretrain_spec(wildcards):
    return _pcfg_spec("sample", "mlm")


def pcfg_downstream_spec(wildcards):
    return _pcfg_spec("downstream", "mlm", "chart")


def pcfg_optimal_loss_spec(wildcards):
    return _pcfg_spec("optimal_loss", "sample", "mlm", "chart")


def pcfg_grammar_input(wildcards):
    """The configured grammar file (so editing it reruns the grammar rule), or nothing."""
    return [PCFG["grammar"]] if PCFG["grammar"] else []


def pretrain_spec_json(wildcards):
    """What one pre-training run depends on: seed, vocabulary and the pretrain section."""
    return json.dumps(
        {
            "seed": config["seed"],
            "vocab": config["vocab"],
            "corpora": {
                k: config["corpora"][k]
                for k in ["train_examples", "valid_examples", "generate_factor", "length_range"]
            }
            | {"tasks": [wildcards.task]},
            "pretrain": config["pretrain"] | {"tasks": [wildcards.task]},
        },
        sort_keys=True,
    )
