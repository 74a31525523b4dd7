"""CLI verbs of the primer family (decoder-LM variants, So et al. 2021): `primer-pretrain`,
`primer-table`."""

from __future__ import annotations

from pathlib import Path

from pipeline_lib.errors import ConfigError
from pipeline_lib.files import read_json


def cmd_pretrain(cfg: dict, args) -> int:
    from pipeline_lib.experiments.primer.pretrain import pretrain_lm
    from pipeline_lib.models.decoder_lm import VARIANTS

    if args.variant not in VARIANTS:
        raise ConfigError(f"--variant: {args.variant!r} is not a decoder-LM variant; "
                          f"allowed: {', '.join(VARIANTS)}")

    pretrain_lm(cfg, args.variant, Path(args.data), Path(args.out), Path(args.ckpt_dir))
    return 0


def cmd_table(cfg: dict, args) -> int:
    from pipeline_lib.experiments.primer.tables import write_primer_table

    write_primer_table(cfg, [read_json(p) for p in args.summaries], Path(args.out_prefix))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("primer-pretrain", aliases=["lm-pretrain"],
                       help="decoder-only LM (Primer-EZ, ...) on PCFG sentences")
    p.add_argument("--variant", required=True, help="primer_ez, transformer_pp or vanilla")
    p.add_argument("--data", required=True, help="results/pcfg/<grammar>/pretrain")
    p.add_argument("--out", required=True, help="output directory (summary.json, metrics)")
    p.add_argument("--ckpt-dir", required=True, help="resumable checkpoints (not an output)")
    p.set_defaults(func=cmd_pretrain, needs_config=True)

    p = sub.add_parser("primer-table", aliases=["lm-table"],
                       help="compare the decoder-LM variants in one table")
    p.add_argument("--out-prefix", required=True, help="writes <prefix>.{csv,md,tex}")
    p.add_argument("summaries", nargs="+", help="results/primer/<variant>/summary.json files")
    p.set_defaults(func=cmd_table, needs_config=True)
