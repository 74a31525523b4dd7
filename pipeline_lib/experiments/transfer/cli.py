"""CLI verbs of the transfer family (Wu et al. 2022): `transfer-pretrain`, `transfer-finetune`,
`transfer-table`, `transfer-curves`. Each handler gets the validated config from
`pipeline_lib.cli`."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.errors import ConfigError


def cmd_pretrain(cfg: dict, args) -> int:
    from pipeline_lib.experiments.transfer.pretrain import pretrain_t5

    pretrain_t5(cfg, Path(args.corpus), Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_finetune(cfg: dict, args) -> int:
    from pipeline_lib.experiments.transfer.finetune import finetune_t5

    if args.downstream not in cfg["downstream"]:
        raise ConfigError(f"--downstream: {args.downstream!r} is not defined under downstream")
    init_params = None if args.init_params in (None, "", "none") else Path(args.init_params)
    finetune_t5(
        cfg, args.downstream, Path(args.data), args.source, args.init, init_params, args.seeds,
        Path(args.out), Path(args.ckpt_dir),
    )
    return 0


def cmd_table(cfg: dict, args) -> int:
    from pipeline_lib.experiments.transfer.tables import write_wu_table

    write_wu_table(args.which, cfg, [Path(m) for m in args.metrics], Path(args.out_prefix),
                   [Path(s) for s in args.source_summaries])
    return 0


def cmd_curves(cfg: dict, args) -> int:
    from pipeline_lib.experiments.transfer.curves import write_curves

    write_curves(args.which, cfg, [Path(m) for m in args.runs],
                 [Path(s) for s in args.sources], Path(args.out))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser(
        "transfer-pretrain",
        aliases=["pretrain"],
        help="pre-train T5 on one corpus (resumes from --ckpt-dir; outputs written at the end)",
    )
    p.add_argument("--corpus", required=True, help="corpus directory (results/corpora/<task>)")
    p.add_argument("--out", required=True, help="output directory for params and metrics")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_pretrain, needs_config=True)

    p = sub.add_parser(
        "transfer-finetune",
        aliases=["finetune"],
        help="fine-tune T5 from one init scheme (several seeds together) and evaluate each run",
    )
    p.add_argument("--downstream", required=True, help="downstream task name")
    p.add_argument("--data", required=True, help="downstream data directory")
    p.add_argument("--source", default="none", help="pre-training corpus of --init-params")
    p.add_argument("--init", default="random", help="init scheme (transfer/init_schemes.py)")
    p.add_argument("--init-params", help="pre-trained params .npz (schemes that need one)")
    p.add_argument("--seeds", "--seed", type=int, nargs="+", default=[0],
                   help="run seeds (model, data, dropout, init), trained together")
    p.add_argument("--out", required=True,
                   help="output root: <out>/<seed>/{metrics.json,predictions.jsonl,metrics.jsonl}")
    p.add_argument("--ckpt-dir", required=True,
                   help="resumable checkpoints (not an output), keyed by the run spec below it")
    p.set_defaults(func=cmd_finetune, needs_config=True)

    p = sub.add_parser(
        "transfer-table",
        aliases=["table"],
        help="aggregate fine-tuning metrics into Table 1, 2 or 3",
    )
    p.add_argument("--which", required=True, choices=["table1", "table2", "table3"])
    p.add_argument("--out-prefix", required=True,
                   help="writes <prefix>.{csv,md,tex,png} and <prefix>.findings.json")
    p.add_argument("--source-summaries", nargs="*", default=[],
                   help="summary.json of the pre-training sources the table uses (captions)")
    p.add_argument("metrics", nargs="+", help="metrics.json files of the fine-tuning runs")
    p.set_defaults(func=cmd_table, needs_config=True)

    p = sub.add_parser(
        "transfer-curves",
        help="validation curves of the runs behind Table 1, 2 or 3 (and of its sources)",
    )
    p.add_argument("--which", required=True, choices=["table1", "table2", "table3"])
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--sources", nargs="*", default=[],
                   help="metrics.jsonl of the pre-training sources the table uses")
    p.add_argument("runs", nargs="+", help="metrics.jsonl files of the fine-tuning runs")
    p.set_defaults(func=cmd_curves, needs_config=True)
