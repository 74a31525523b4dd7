"""CLI verbs of the implicit-bias family (Liu et al. 2023): `implicit-bias-pretrain`,
`implicit-bias-evaluate`, `implicit-bias-lookup-table`, `implicit-bias-table`."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.errors import ConfigError
from pipeline_lib.files import read_json


def cmd_pretrain(cfg: dict, args) -> int:
    from pipeline_lib.experiments.implicit_bias.pretrain import pretrain_bert_mlm

    for key, value in (("size", args.size), ("optimizer", args.optimizer)):
        allowed = cfg["implicit_bias"][f"{key}s"]
        if value not in allowed:
            raise ConfigError(f"--{key}: {value!r} is not in implicit_bias.{key}s; "
                              f"allowed: {', '.join(allowed)}")
    pretrain_bert_mlm(cfg, args.size, args.optimizer, args.seed, Path(args.data),
                      Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_evaluate(cfg: dict, args) -> int:
    from pipeline_lib.experiments.implicit_bias.evaluate import evaluate_checkpoint

    evaluate_checkpoint(cfg, args.size, args.optimizer, args.seed, args.step, Path(args.params),
                        Path(args.pcfg_dir), Path(args.out))
    return 0


def cmd_lookup_table(cfg: dict, args) -> int:
    from pipeline_lib.experiments.implicit_bias.evaluate import lookup_table_probe

    lookup_table_probe(cfg, Path(args.pcfg_dir), Path(args.out))
    return 0


def cmd_table(cfg: dict, args) -> int:
    from pipeline_lib.experiments.implicit_bias.tables import write_implicit_bias_tables

    lookup = read_json(args.lookup) if args.lookup else None
    write_implicit_bias_tables(cfg, [read_json(p) for p in args.evals], lookup,
                               Path(args.out_prefix))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("implicit-bias-pretrain", aliases=["mlm-pretrain"],
                       help="BERT MLM pre-training on the PCFG instances")
    p.add_argument("--size", required=True, help="a key of implicit_bias.sizes")
    p.add_argument("--optimizer", required=True, help="a key of implicit_bias.optimizers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="results/pcfg/<grammar>/pretrain")
    p.add_argument("--out", required=True, help="output directory (step<N>.npz, metrics)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_pretrain, needs_config=True)

    p = sub.add_parser("implicit-bias-evaluate", aliases=["liu-evaluate"],
                       help="exact loss, Hessian trace, probe, fine-tune of one checkpoint")
    p.add_argument("--size", required=True)
    p.add_argument("--optimizer", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--params", required=True, help="exported parameters (step<N>.npz)")
    p.add_argument("--pcfg-dir", required=True, help="results/pcfg/<grammar>")
    p.add_argument("--out", required=True, help="JSON record (written atomically)")
    p.set_defaults(func=cmd_evaluate, needs_config=True)

    p = sub.add_parser("implicit-bias-lookup-table", aliases=["liu-lookup-table"],
                       help="linear probe on the exact conditionals")
    p.add_argument("--pcfg-dir", required=True, help="results/pcfg/<grammar>")
    p.add_argument("--out", required=True, help="JSON record (written atomically)")
    p.set_defaults(func=cmd_lookup_table, needs_config=True)

    p = sub.add_parser("implicit-bias-table", aliases=["pcfg-tables"],
                       help="aggregate the per-checkpoint evaluations into tables and figures")
    p.add_argument("--lookup", help="the lookup-table probe record")
    p.add_argument("--out-prefix", required=True, help="e.g. results/tables/pcfg_")
    p.add_argument("evals", nargs="+", help="per-checkpoint evaluation records")
    p.set_defaults(func=cmd_table, needs_config=True)
