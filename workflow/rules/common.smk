# Shared helpers: config validation, wildcard constraints, params functions.
import json
from pathlib import Path

from pipeline_lib.config import ConfigError, validate_config
from pipeline_lib.data.synthetic import SPECIAL_CORPORA
from pipeline_lib.experiments.transfer.init_schemes import needs_checkpoint
from pipeline_lib.experiments.transfer.tables import NO_SOURCE, OFF_THE_SHELF, table_runs

try:
    # One schema and one set of semantic checks for Snakemake and the CLI; defaults filled in.
    config.update(validate_config(config, source="config"))
except ConfigError as e:
    raise WorkflowError(f"invalid configuration: {e}") from None


# Every path of this configuration lives under results_dir ("results" for config.yaml,
# "results_paper" for workflow/configs/paper.yaml): the two never share an output.
RESULTS = config["results_dir"]
TASKS = config["corpora"]["tasks"]
# The conda environment all jobs declare for `--sdm conda` is execution.conda_env (envs/*.yaml).
CONDA_ENV = f"../../envs/{config['execution']['conda_env']}.yaml"


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
    if wildcards.task in SPECIAL_CORPORA:
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
    transduction_task="|".join(PCFG["transduction"]["tasks"]),


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


def pcfg_transduction_spec(wildcards):
    return _pcfg_spec("transduction", "sample", "chart")


def pcfg_grammar_input(wildcards):
    """The configured grammar file (so editing it reruns the grammar rule), or nothing."""
    return [PCFG["grammar"]] if PCFG["grammar"] else []


PRETRAIN = config["transfer"]["pretrain"]


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
            "transfer": {"pretrain": PRETRAIN | {"tasks": [wildcards.task]}},
        },
        sort_keys=True,
    )


# --- the transfer family (Wu et al. 2022) ----------------------------------------------------

DOWNSTREAM = config["downstream"]
FINETUNE = config["transfer"]["finetune"]
TABLES = config["transfer"]["tables"]
PRETRAIN_TASKS = PRETRAIN["tasks"]
# Table 1's off-the-shelf row: a local Hugging Face T5 directory, imported by
# `transfer_off_the_shelf`.
OFF_THE_SHELF_DIR = TABLES["table1"]["off_the_shelf"] or []


wildcard_constraints:
    downstream="|".join(DOWNSTREAM),
    source="|".join([NO_SOURCE, OFF_THE_SHELF, *TASKS]),
    init=r"[A-Za-z_]+|preattn_ln_[0-9.e+-]+",
    seed=r"\d+",
    table="table1|table2|table3",


def finetune_metrics(runs):
    return [
        f"{RESULTS}/transfer/finetune/{downstream}/{source}/{init}/{seed}/metrics.json"
        for source, init in runs
        for downstream in FINETUNE["tasks"]
        for seed in FINETUNE["seeds"]
    ]


def table_inputs(wildcards):
    return finetune_metrics(table_runs(wildcards.table, config))


def table_source_summaries(wildcards):
    """summary.json of every pre-trained source a table's rows start from (for its caption)."""
    sources = {s for s, _ in table_runs(wildcards.table, config)} - {NO_SOURCE, OFF_THE_SHELF}
    return [f"{RESULTS}/transfer/pretrain/{s}/summary.json" for s in sorted(sources)]


def tables_spec_json(wildcards):
    return json.dumps(
        {
            "seed": config["seed"],
            "vocab": config["vocab"],
            "transfer": {
                "pretrain": {
                    "tasks": PRETRAIN_TASKS,
                    "model": PRETRAIN["model"],
                    "stop_at_accuracy": PRETRAIN["stop_at_accuracy"],
                },
                "finetune": FINETUNE,
                "tables": TABLES,
            },
            "downstream": DOWNSTREAM,
        },
        sort_keys=True,
    )


def finetune_init_input(wildcards):
    """The pre-trained parameters the init scheme reads (none for random / Table 3 inits)."""
    if not needs_checkpoint(wildcards.init):
        return []
    if wildcards.source == NO_SOURCE:
        raise WorkflowError(
            f"init {wildcards.init!r} needs a pre-trained source, got {NO_SOURCE!r}"
        )
    name = "best_params" if PRETRAIN["checkpoint"] == "best" else "params"
    return f"{RESULTS}/transfer/pretrain/{wildcards.source}/{name}.npz"


def finetune_init_param(wildcards, input):
    return input.init or "none"


def finetune_spec_json(wildcards):
    """What one group of fine-tuning runs depends on (not the tables or other tasks)."""
    return json.dumps(
        {
            "seed": config["seed"],
            "vocab": config["vocab"],
            "downstream": {wildcards.downstream: DOWNSTREAM[wildcards.downstream]},
            "transfer": {
                "pretrain": {"model": PRETRAIN["model"]},
                "finetune": FINETUNE
                | {"tasks": [wildcards.downstream]}
                | {
                    "overrides": {
                        k: v for k, v in FINETUNE["overrides"].items() if k == wildcards.downstream
                    }
                },
            },
        },
        sort_keys=True,
    )


def downstream_source_input(wildcards):
    """The PCFG stage's task directory for pcfg_*, a configured local source, or nothing."""
    entry = DOWNSTREAM[wildcards.downstream]
    if entry["adapter"].startswith("pcfg_"):
        task = entry["adapter"].split("_", 1)[1]
        product = "downstream" if task in ("A", "B", "C") else "transduction"
        return f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/{product}/{task}"
    source = entry.get("source")
    if not source or "://" in source:
        return []
    if not Path(source).exists():
        # Not an input (the plan stays complete for `snakemake -n`); the downstream_data job
        # fails first thing with a message naming downstream.<name>.source.
        logger.warning(f"downstream.{wildcards.downstream}.source: {source} does not exist (yet)")
        return []
    return [source]


def downstream_spec_json(wildcards):
    return json.dumps(
        {
            "seed": config["seed"],
            "vocab": config["vocab"],
            "corpora": {"nonsense_summary": config["corpora"]["nonsense_summary"]},
            "downstream": {wildcards.downstream: DOWNSTREAM[wildcards.downstream]},
        },
        sort_keys=True,
    )


# --- the implicit-bias family (Liu et al. 2023) and the primer family ------------------------

IMPLICIT_BIAS = config["implicit_bias"]
PRIMER = config["primer"]


wildcard_constraints:
    size="|".join(IMPLICIT_BIAS["sizes"]),
    optimizer="|".join(IMPLICIT_BIAS["optimizers"]),
    variant="|".join(PRIMER["variants"]),
    step=r"\d+",


def implicit_bias_spec_json(wildcards):
    """The implicit_bias section's training keys (sizes/optimizers narrowed to the run's) and the root
    seed; the evaluation settings (trace, probe, finetune) do not rerun pre-training."""
    training = {
        k: v for k, v in IMPLICIT_BIAS.items() if k not in ("trace", "probe", "finetune", "matched")
    }
    section = training | {
        "sizes": {k: v for k, v in IMPLICIT_BIAS["sizes"].items() if k == wildcards.size},
        "optimizers": {
            k: v for k, v in IMPLICIT_BIAS["optimizers"].items() if k == wildcards.optimizer
        },
        "seeds": [int(wildcards.seed)],
    }
    return json.dumps(
        {"seed": config["seed"], "vocab": config["vocab"], "implicit_bias": section},
        sort_keys=True,
    )


def primer_spec_json(wildcards):
    return json.dumps(
        {"seed": config["seed"], "vocab": config["vocab"], "primer": PRIMER}, sort_keys=True
    )


PCFG_DIRS = [
    f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/{part}" for part in ("grammar", "pretrain", "optimal_loss")
] + [f"{RESULTS}/pcfg/{PCFG_GRAMMAR}/downstream/{task}" for task in PCFG_TASKS]


def implicit_bias_eval_spec_json(wildcards, tables=False):
    """Everything the evaluations read: the implicit_bias and pcfg sections and the root seed
    (the findings' loss matching only with tables=True, so it does not rerun evaluations)."""
    section = {k: v for k, v in IMPLICIT_BIAS.items() if tables or k != "matched"}
    return json.dumps(
        {
            "seed": config["seed"],
            "vocab": config["vocab"],
            "implicit_bias": section,
            "pcfg": PCFG,
        },
        sort_keys=True,
    )


def implicit_bias_tables_spec_json(wildcards):
    return implicit_bias_eval_spec_json(wildcards, tables=True)
