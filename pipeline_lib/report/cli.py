"""CLI verbs of the report layer, for any family: `report-findings` (the findings page of
every table) and `report-curves` (validation curves of runs laid out by row and seed)."""

from __future__ import annotations

from pathlib import Path


def cmd_findings(args) -> int:
    from pipeline_lib.report.findings_page import write_findings_page

    write_findings_page([Path(p) for p in args.findings], Path(args.md), Path(args.html))
    return 0


def run_of(path: Path, root: Path) -> tuple[str, str]:
    """(row, seed) of `<root>/<row...>/<seed>/<metrics file>`: the row is the path between
    the root and the seed directory (e.g. "base/adamw")."""
    try:
        *row, seed, _ = Path(path).relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path}: not under --root {root}") from None
    if not row:
        raise ValueError(f"{path}: expected <root>/<row>/<seed>/<file> under {root}")
    return "/".join(row), seed


def cmd_curves(args) -> int:
    from pipeline_lib.report.curves import curves_figure, read_curve

    records = []
    for path in args.metrics:
        row, seed = run_of(Path(path), Path(args.root))
        records += read_curve(path, row=row, column=args.column, seed=seed, metric=args.metric,
                              split=args.split)
    curves_figure(records, Path(args.out), args.title, ylabel=args.ylabel or args.metric)
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("report-findings",
                       help="collect every table's findings.json into one page (md + html)")
    p.add_argument("--md", required=True, help="the Markdown page to write")
    p.add_argument("--html", required=True, help="the HTML page to write")
    p.add_argument("findings", nargs="+", help="<table>.findings.json files, in page order")
    p.set_defaults(func=cmd_findings)

    p = sub.add_parser("report-curves",
                       help="validation curves of runs laid out as <root>/<row...>/<seed>/")
    p.add_argument("--root", required=True, help="directory the runs' paths start with")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--title", required=True)
    p.add_argument("--column", default="validation", help="the panel's title")
    p.add_argument("--metric", default="loss", help="metric of the metrics.jsonl lines")
    p.add_argument("--split", default="eval", help="split of the lines (train or eval)")
    p.add_argument("--ylabel", default="")
    p.add_argument("metrics", nargs="+", help="metrics.jsonl of each run")
    p.set_defaults(func=cmd_curves)
