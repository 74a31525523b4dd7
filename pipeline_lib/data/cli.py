"""CLI verbs of the data stage: `corpus`, `downstream`, `corpus-check`, `seqio-peek`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline_lib.errors import ConfigError


def cmd_corpus(cfg: dict, args) -> int:
    from pipeline_lib.data.corpus import build_corpus
    from pipeline_lib.data.layout_config import corpus_spec, layout_from_config

    tasks = cfg["corpora"]["tasks"]
    task = args.task or (tasks[0] if len(tasks) == 1 else None)
    if task is None:
        raise ConfigError("--task: name the corpus to build (the config lists several)")
    if task not in tasks:
        raise ConfigError(f"--task: {task!r} is not in corpora.tasks; allowed: {', '.join(tasks)}")
    layout = layout_from_config(cfg, cache_dir=args.cache_dir)
    meta = build_corpus(corpus_spec(cfg, task), layout, Path(args.out), workers=args.workers)
    counts = {s: v["counts"] for s, v in meta["sources"].items()}
    logging.getLogger("pipeline_lib").info("%s written to %s: %s", task, args.out, counts)
    return 0


def cmd_downstream(cfg: dict, args) -> int:
    from pipeline_lib.data.downstream import build_downstream
    from pipeline_lib.data.layout_config import layout_from_config

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


def cmd_corpus_check(args) -> int:
    from pipeline_lib.data import store

    store.verify_checksums(Path(args.dir))
    for source, counts in store.verify_counts(Path(args.dir)).items():
        print(f"{source}: {counts} (checksums and row counts verified)")
    return 0


def cmd_seqio_peek(args) -> int:
    from pipeline_lib.data.seqio_tasks import peek

    for row in peek(Path(args.dir), args.split, args.n):
        print(json.dumps(row))
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser(
        "corpus",
        help="generate one synthetic pre-training corpus (dedup, train/valid split, write)",
    )
    p.add_argument("--task", help="corpus id (e.g. identity, lime); default: the only one")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--workers", type=int, default=1, help="processes (does not change data)")
    p.add_argument("--cache-dir", default="results/cache", help="where gs:// files are cached")
    p.set_defaults(func=cmd_corpus, needs_config=True)

    p = sub.add_parser(
        "downstream", help="build a fine-tuning data set (tokenised, with examples for metrics)"
    )
    p.add_argument("--name", required=True, help="downstream task (a key of `downstream`)")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--cache-dir", default="results/cache", help="where gs:// files are cached")
    p.add_argument("source", nargs="?", help="data directory (overrides downstream.<name>.source)")
    p.set_defaults(func=cmd_downstream, needs_config=True)

    p = sub.add_parser("corpus-check", help="verify a data directory: every file's sha256 and every split's row count")
    p.add_argument("dir", help="corpus directory (with meta.json)")
    p.set_defaults(func=cmd_corpus_check)

    p = sub.add_parser("seqio-peek", help="print examples of a corpus through its seqio Task")
    p.add_argument("dir", help="corpus directory (with meta.json)")
    p.add_argument("--split", default="validation", choices=["train", "validation"])
    p.add_argument("--n", type=int, default=3)
    p.set_defaults(func=cmd_seqio_peek)
