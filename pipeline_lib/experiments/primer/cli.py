"""CLI verbs of the primer family (So et al. 2021): `primer-corpus` (alias `lm-corpus`),
`primer-pretrain` (`lm-pretrain`), `primer-table` (`lm-table`)."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.errors import ConfigError
from pipeline_lib.files import read_json


def cmd_corpus(cfg: dict, args) -> int:
    from pipeline_lib.experiments.primer.corpus import build_corpus

    build_corpus(cfg["primer"], Path(args.data) if args.data else None, Path(args.out))
    return 0


def cmd_pretrain(cfg: dict, args) -> int:
    from pipeline_lib.experiments.primer.pretrain import pretrain_primer

    variants = cfg["primer"]["variants"]
    if args.variant not in variants:
        raise ConfigError(f"--variant: {args.variant!r} is not in primer.variants; "
                          f"allowed: {', '.join(variants)}")
    pretrain_primer(cfg, args.variant, int(args.seed), Path(args.corpus), Path(args.out),
                    Path(args.ckpt_dir))
    return 0


def cmd_table(cfg: dict, args) -> int:
    from pipeline_lib.experiments.primer.tables import write_primer_table

    write_primer_table(cfg, [read_json(p) for p in args.summaries], Path(args.out_prefix),
                       Path(args.figure) if args.figure else None)
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("primer-corpus", aliases=["lm-corpus"],
                       help="fixed LM windows (t5 LM objective) for the Primer runs")
    p.add_argument("--data", help="results/pcfg/<grammar>/pretrain (primer.data.kind: pcfg)")
    p.add_argument("--out", required=True, help="output directory (train/validation.npy)")
    p.set_defaults(func=cmd_corpus, needs_config=True)

    p = sub.add_parser("primer-pretrain", aliases=["lm-pretrain"],
                       help="one decoder-LM variant x seed on the LM windows, with its curve")
    p.add_argument("--variant", required=True, help="one of primer.variants")
    p.add_argument("--seed", required=True, type=int, help="one of primer.seeds")
    p.add_argument("--corpus", required=True, help="results/primer/corpus")
    p.add_argument("--out", required=True, help="output directory (summary.json, metrics)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_pretrain, needs_config=True)

    p = sub.add_parser("primer-table", aliases=["lm-table"],
                       help="the variants side by side with speed-ups and the finding")
    p.add_argument("--out-prefix", required=True,
                   help="writes <prefix>.{csv,md,tex} and <prefix>.findings.json")
    p.add_argument("--figure", help="primer_curves.png path")
    p.add_argument("summaries", nargs="+", help="results/primer/<variant>/<seed>/summary.json")
    p.set_defaults(func=cmd_table, needs_config=True)
