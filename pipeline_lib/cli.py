"""`python -m pipeline_lib <verb> ...`: the one entry point the Snakemake rules call.

Verbs are registered by the stage that owns them (`data.cli`, `pcfg.cli` and each experiment
family's `cli`); a verb that reads the config sets `needs_config=True` and gets `--config FILE`
/ `--spec JSON` here, validated (same schema and checks as Snakemake) before its handler runs,
so bad input fails with one message naming the key before any compute is spent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline_lib.config import check_distributed, load_config, validate_config
from pipeline_lib.data.cli import register_cli as register_data_cli
from pipeline_lib.errors import ConfigError, PipelineError
from pipeline_lib.experiments.implicit_bias.cli import register_cli as register_implicit_bias_cli
from pipeline_lib.experiments.primer.cli import register_cli as register_primer_cli
from pipeline_lib.experiments.transfer.cli import register_cli as register_transfer_cli
from pipeline_lib.pcfg.cli import register_cli as register_pcfg_cli
from pipeline_lib.report.cli import register_cli as register_report_cli


def _config_from_args(args) -> dict:
    if getattr(args, "spec", None):
        try:
            cfg = json.loads(args.spec)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--spec: not valid JSON ({e.msg} at column {e.colno})") from None
        return validate_config(cfg, source="--spec")
    if getattr(args, "config", None):
        return load_config(args.config)
    raise ConfigError("give --config FILE (or --spec JSON)")


def cmd_validate_config(args) -> int:
    cfg = load_config(args.config)
    print(f"{args.config}: OK ({len(cfg['corpora']['tasks'])} corpora)")
    return 0


def cmd_import_hf_t5(args) -> int:
    """A local Hugging Face T5 checkpoint as this project's params.npz (no download)."""
    import flax.nnx as nnx

    from pipeline_lib.models.interop import load_hf_checkpoint
    from pipeline_lib.train.checkpoint import export_params

    model = load_hf_checkpoint(Path(args.hf_dir))
    _, params = nnx.split(model, nnx.Param)
    for name in args.out:
        export_params(params, Path(name))
    return 0


def _add_distributed_flags(p: argparse.ArgumentParser) -> None:
    """--coordinator/--num-processes/--process-id, before or after the verb (SUPPRESS: a flag
    not given leaves no attribute, so the verb's parser never hides the top-level one)."""
    g = p.add_argument_group("multi-process JAX (one global mesh over every process's devices)")
    g.add_argument("--coordinator", metavar="HOST:PORT", default=argparse.SUPPRESS,
                   help="process 0's coordination service (or auto: SLURM srun, TPU pod); "
                   "overrides execution.coordinator")
    g.add_argument("--num-processes", metavar="N", type=int, default=argparse.SUPPRESS,
                   help="processes in the run (overrides execution.num_processes)")
    g.add_argument("--process-id", metavar="I", type=int, default=argparse.SUPPRESS,
                   help="this process, 0..N-1 (0 hosts the coordinator)")


def start_distributed(args, execution: dict) -> bool:
    """Join the multi-process run the flags / `execution` section ask for (before JAX starts)."""
    coordinator = vars(args).get("coordinator", execution.get("coordinator"))
    processes = vars(args).get("num_processes", execution.get("num_processes"))
    process_id = vars(args).get("process_id")
    if processes is not None and processes < 1:
        raise ConfigError(f"--num-processes: {processes} must be at least 1")
    given = vars(args)
    keys = (  # name what the user wrote: the flag, or the config key it came from
        "--coordinator" if "coordinator" in given else "--coordinator (or execution.coordinator)",
        "--num-processes" if "num_processes" in given else "execution.num_processes",
        "--process-id",
    )
    check_distributed(coordinator, processes, process_id, keys=keys)
    if coordinator is None:
        return False
    if coordinator != "auto" and (processes is None or process_id is None):
        missing = keys[2] if process_id is None else "--num-processes"
        raise ConfigError(f"{missing}: needed with {keys[0]} {coordinator} (or give auto)")
    from pipeline_lib.train.mesh import initialize_distributed  # imports jax: only when asked

    return initialize_distributed(
        coordinator, processes, process_id,
        initialization_timeout_s=execution.get("initialization_timeout_s", 300),
        heartbeat_timeout_s=execution.get("heartbeat_timeout_s", 100),
    )


def _add_config_source(p: argparse.ArgumentParser) -> None:
    """--config FILE or --spec JSON (the config slice a Snakemake rule passes), one required."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="YAML config file")
    src.add_argument("--spec", help="the config as JSON (what the Snakemake rule passes)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline_lib",
        description="Pre-training science pipeline: the verbs the Snakemake rules call.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _add_distributed_flags(parser)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("validate-config", help="validate a config file against the schema")
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(func=cmd_validate_config)

    register_data_cli(sub)
    register_pcfg_cli(sub)
    register_transfer_cli(sub)
    register_implicit_bias_cli(sub)
    register_primer_cli(sub)
    register_report_cli(sub)

    p = sub.add_parser("import-hf-t5", help="convert a local Hugging Face T5 directory")
    p.add_argument("--hf-dir", required=True, help="directory with config.json + weights")
    p.add_argument("--out", required=True, nargs="+", help="params .npz file(s) to write")
    p.set_defaults(func=cmd_import_hf_t5)

    seen = set()
    for verb_parser in sub.choices.values():  # aliases map to the same parser: once each
        if id(verb_parser) not in seen and verb_parser.get_default("needs_config"):
            _add_config_source(verb_parser)
            _add_distributed_flags(verb_parser)
        seen.add(id(verb_parser))
    return parser


def main(argv: list[str] | None = None) -> int:
    # JAX's persistent compilation cache, shared by every job of the workflow (the working
    # directory is the workflow's); set before anything imports jax. An explicit setting wins.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path("results/cache/jax").resolve()))
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    try:
        if getattr(args, "needs_config", False):  # handler(validated config, args)
            cfg = _config_from_args(args)
            start_distributed(args, cfg["execution"])
            return int(args.func(cfg, args) or 0)
        start_distributed(args, {})
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (PipelineError, ValueError, FileNotFoundError) as e:
        # an expected failure (bad input, a diverged run, a corrupt checkpoint): one line
        print(f"error: {e}", file=sys.stderr)
        return 2
