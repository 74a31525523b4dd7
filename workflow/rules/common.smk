# Shared helpers: config validation, wildcard constraints, params functions.
import json

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
