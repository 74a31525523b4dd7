"""`python -m pipeline_lib <verb> ...`: the one entry point the Snakemake rules call.

Every verb validates its config first (same schema and checks as Snakemake), so bad input
fails with one message naming the key before any compute is spent.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pipeline_lib.config import ConfigError, load_config, validate_config


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


def cmd_corpus(args) -> int:
    from pipeline_lib.data.corpus import build_corpus
    from pipeline_lib.data.layout_config import corpus_spec, layout_from_config

    cfg = _config_from_args(args)
    task = args.task or (cfg["corpora"]["tasks"][0] if len(cfg["corpora"]["tasks"]) == 1 else None)
    if task is None:
        raise ConfigError("--task: name the corpus to build (the config lists several)")
    if task not in cfg["corpora"]["tasks"]:
        allowed = ", ".join(cfg["corpora"]["tasks"])
        raise ConfigError(f"--task: {task!r} is not in corpora.tasks; allowed: {allowed}")
    layout = layout_from_config(cfg, cache_dir=args.cache_dir)
    meta = build_corpus(corpus_spec(cfg, task), layout, Path(args.out), workers=args.workers)
    counts = {s: v["counts"] for s, v in meta["sources"].items()}
    logging.getLogger("pipeline_lib").info("%s written to %s: %s", task, args.out, counts)
    return 0


def cmd_pretrain(args) -> int:
    from pipeline_lib.pretrain import pretrain_t5

    cfg = _config_from_args(args)
    pretrain_t5(cfg, Path(args.corpus), Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_downstream(args) -> int:
    from pipeline_lib.data.downstream import build_downstream
    from pipeline_lib.data.layout_config import layout_from_config

    cfg = _config_from_args(args)
    if args.name not in cfg["downstream"]:
        raise ConfigError(f"--name: {args.name!r} is not defined under downstream; "
                          f"allowed: {', '.join(cfg['downstream'])}")
    spec = dict(cfg["downstream"][args.name])
    if args.source:  # the rule passes the PCFG stage's directory as an input
        spec["source"] = args.source
    spec["cache_dir"] = args.cache_dir
    layout = layout_from_config(cfg, cache_dir=args.cache_dir)
    build_downstream(args.name, spec, layout, Path(args.out))
    return 0


def cmd_finetune(args) -> int:
    from pipeline_lib.finetune import finetune_t5

    cfg = _config_from_args(args)
    if args.downstream not in cfg["downstream"]:
        raise ConfigError(f"--downstream: {args.downstream!r} is not defined under downstream")
    init_params = None if args.init_params in (None, "", "none") else Path(args.init_params)
    finetune_t5(
        cfg, args.downstream, Path(args.data), args.source, args.init, init_params, args.seed,
        Path(args.out), Path(args.ckpt_dir),
    )
    return 0


def cmd_table(args) -> int:
    from pipeline_lib.wu_tables import write_wu_table

    cfg = _config_from_args(args)
    write_wu_table(args.which, cfg, [Path(m) for m in args.metrics], Path(args.out_prefix))
    return 0


def cmd_mlm_pretrain(args) -> int:
    from pipeline_lib.mlm_pretrain import pretrain_bert_mlm

    cfg = _config_from_args(args)
    for key, value in (("size", args.size), ("optimizer", args.optimizer)):
        allowed = cfg["liu"][f"{key}s"]
        if value not in allowed:
            raise ConfigError(f"--{key}: {value!r} is not in liu.{key}s; "
                              f"allowed: {', '.join(allowed)}")
    pretrain_bert_mlm(cfg, args.size, args.optimizer, args.seed, Path(args.data),
                      Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_lm_pretrain(args) -> int:
    from pipeline_lib.lm_pretrain import pretrain_lm

    cfg = _config_from_args(args)
    pretrain_lm(cfg, args.variant, Path(args.data), Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_liu_evaluate(args) -> int:
    from pipeline_lib.liu import evaluate_checkpoint

    cfg = _config_from_args(args)
    evaluate_checkpoint(cfg, args.size, args.optimizer, args.seed, args.step, Path(args.params),
                        Path(args.pcfg_dir), Path(args.out))
    return 0


def cmd_liu_lookup_table(args) -> int:
    from pipeline_lib.liu import lookup_table_probe

    lookup_table_probe(_config_from_args(args), Path(args.pcfg_dir), Path(args.out))
    return 0


def cmd_pcfg_tables(args) -> int:
    from pipeline_lib.liu import load_records
    from pipeline_lib.liu_tables import write_pcfg_tables

    cfg = _config_from_args(args)
    lookup = load_records([Path(args.lookup)])[0] if args.lookup else None
    write_pcfg_tables(cfg, load_records([Path(p) for p in args.evals]), lookup,
                      Path(args.out_prefix))
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


def cmd_lm_table(args) -> int:
    from pipeline_lib.liu import load_records
    from pipeline_lib.lm_pretrain import write_lm_table

    cfg = _config_from_args(args)
    write_lm_table(cfg, load_records([Path(p) for p in args.summaries]), Path(args.out_prefix))
    return 0


def cmd_corpus_check(args) -> int:
    from pipeline_lib.data import store

    store.verify_checksums(Path(args.dir))
    meta = store.read_meta(Path(args.dir))
    for source, info in meta["sources"].items():
        print(f"{source}: {info['counts']}")
    return 0


def cmd_seqio_peek(args) -> int:
    from pipeline_lib.data.seqio_tasks import peek

    for row in peek(Path(args.dir), args.split, args.n):
        print(json.dumps(row))
    return 0


def _config_source(p: argparse.ArgumentParser) -> None:
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
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("validate-config", help="validate a config file against the schema")
    p.add_argument("--config", required=True, help="YAML config file")
    p.set_defaults(func=cmd_validate_config)

    p = sub.add_parser(
        "corpus",
        help="generate one synthetic pre-training corpus (dedup, train/valid split, write)",
    )
    _config_source(p)
    p.add_argument("--task", help="corpus id (e.g. identity, lime); default: the only one")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--workers", type=int, default=1, help="processes (does not change data)")
    p.add_argument("--cache-dir", default="results/cache", help="where gs:// files are cached")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser(
        "pretrain",
        help="pre-train T5 on one corpus (resumes from --ckpt-dir; outputs written at the end)",
    )
    _config_source(p)
    p.add_argument("--corpus", required=True, help="corpus directory (results/corpora/<task>)")
    p.add_argument("--out", required=True, help="output directory for params and metrics")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser(
        "downstream", help="build a fine-tuning data set (tokenised, with examples for metrics)"
    )
    _config_source(p)
    p.add_argument("--name", required=True, help="downstream task (a key of `downstream`)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--cache-dir", default="results/cache", help="where gs:// files are cached")
    p.add_argument("source", nargs="?", help="data directory (overrides downstream.<name>.source)")
    p.set_defaults(func=cmd_downstream)

    p = sub.add_parser("finetune", help="fine-tune T5 from one init scheme and evaluate it")
    _config_source(p)
    p.add_argument("--downstream", required=True, help="downstream task name")
    p.add_argument("--data", required=True, help="downstream data directory")
    p.add_argument("--source", default="none", help="pre-training corpus of --init-params")
    p.add_argument("--init", default="random", help="init scheme (pipeline_lib.init_schemes)")
    p.add_argument("--init-params", help="pre-trained params .npz (schemes that need one)")
    p.add_argument("--seed", type=int, default=0, help="run seed (model, data, dropout, init)")
    p.add_argument("--out", required=True, help="output directory (metrics.json, predictions)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("table", help="aggregate fine-tuning metrics into Table 1, 2 or 3")
    _config_source(p)
    p.add_argument("--which", required=True, choices=["table1", "table2", "table3"])
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex,png}")
    p.add_argument("metrics", nargs="+", help="metrics.json files of the fine-tuning runs")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("mlm-pretrain", help="BERT MLM pre-training on the PCFG instances")
    _config_source(p)
    p.add_argument("--size", required=True, help="a key of liu.sizes")
    p.add_argument("--optimizer", required=True, help="a key of liu.optimizers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="results/pcfg/<grammar>/pretrain")
    p.add_argument("--out", required=True, help="output directory (step<N>.npz, metrics)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_mlm_pretrain)

    p = sub.add_parser("lm-pretrain", help="decoder-only LM (Primer-EZ, ...) on PCFG sentences")
    _config_source(p)
    p.add_argument("--variant", required=True,
                   choices=["primer_ez", "transformer_pp", "vanilla"])
    p.add_argument("--data", required=True, help="results/pcfg/<grammar>/pretrain")
    p.add_argument("--out", required=True, help="output directory (summary.json, metrics)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_lm_pretrain)

    p = sub.add_parser("liu-evaluate", help="exact loss, Hessian trace, probe, fine-tune")
    _config_source(p)
    p.add_argument("--size", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--params", required=True, help="exported parameters (step<N>.npz)")
    p.add_argument("--pcfg-dir", required=True, help="results/pcfg/<grammar>")
    p.add_argument("--out", required=True, help="JSON record (written atomically)")
    p.set_defaults(func=cmd_liu_evaluate)

    p = sub.add_parser("liu-lookup-table", help="linear probe on the exact conditionals")
    _config_source(p)
    p.add_argument("--pcfg-dir", required=True, help="results/pcfg/<grammar>")
    p.add_argument("--out", required=True, help="JSON record (written atomically)")
    p.set_defaults(func=cmd_liu_lookup_table)

    p = sub.add_parser("pcfg-tables", help="aggregate the Liu et al. evaluations")
    _config_source(p)
    p.add_argument("--lookup", help="the lookup-table probe record")
    p.add_argument("--out-prefix", required=True, help="e.g. results/tables/pcfg_")
    p.add_argument("evals", nargs="+", help="per-checkpoint evaluation records")
    p.set_defaults(func=cmd_pcfg_tables)

    p = sub.add_parser("lm-table", help="compare the decoder-LM variants in one table")
    _config_source(p)
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex}")
    p.add_argument("summaries", nargs="+", help="results/lm/<variant>/summary.json files")
    p.set_defaults(func=cmd_lm_table)

    p = sub.add_parser("import-hf-t5", help="convert a local Hugging Face T5 directory")
    p.add_argument("--hf-dir", required=True, help="directory with config.json + weights")
    p.add_argument("--out", required=True, nargs="+", help="params .npz file(s) to write")
    p.set_defaults(func=cmd_import_hf_t5)

    p = sub.add_parser("corpus-check", help="verify a corpus directory's checksums and counts")
    p.add_argument("dir", help="corpus directory (with meta.json)")
    p.set_defaults(func=cmd_corpus_check)

    p = sub.add_parser("seqio-peek", help="print examples of a corpus through its seqio Task")
    p.add_argument("dir", help="corpus directory (with meta.json)")
    p.add_argument("--split", default="validation", choices=["train", "validation"])
    p.add_argument("--n", type=int, default=3)
    p.set_defaults(func=cmd_seqio_peek)

    try:
        from pipeline_lib.pcfg.cli import register_cli
    except ImportError:
        pass
    else:
        register_cli(sub)
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
        return int(args.func(args) or 0)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
