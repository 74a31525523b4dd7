"""The findings page: every table's `*.findings.json` on one page, "did the science reproduce at
this scale?".

Each table writes `<table>.findings.json` (`findings.findings_json`: its claims checked, the
caption stating the scale). `write_findings_page` reads them in the order given and writes
the page twice: Markdown (for a terminal or a diff) and a self-contained HTML page (what
`snakemake --report` shows). The page opens with the tally of verdicts per table, then one
section per table listing each claim with the paper's value beside the measured one, its
95 % interval and how the interval was computed. Warnings a table recorded (e.g. a
pre-training source that never reached its threshold) are repeated here: a claim checked on
an unconverged source is not the paper's setting.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

from pipeline_lib.files import atomic_write_text, read_json
from pipeline_lib.report.findings import HELD, INCONCLUSIVE, NOT_HELD, Finding, format_number

VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE)
TITLE = "Did the science reproduce at this scale?"


def load_findings(path: str | Path) -> dict:
    """One findings.json: {"table", "caption", "findings": [Finding], "warnings": [...]}."""
    doc = read_json(Path(path))
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ValueError(f"{path}: not a findings file (no 'findings' list)")
    fields = set(Finding.__dataclass_fields__)
    try:
        findings = [Finding(**{k: v for k, v in f.items() if k in fields})
                    for f in doc["findings"]]
    except (TypeError, AttributeError) as e:
        raise ValueError(f"{path}: a finding is malformed ({e})") from None
    name = doc.get("table") or Path(path).name.removesuffix(".findings.json")
    return {"table": name, "caption": doc.get("caption", ""), "findings": findings,
            "warnings": list(doc.get("warnings", [])), "path": str(path)}


def tally(findings: Sequence[Finding]) -> dict[str, int]:
    return {v: sum(f.verdict == v for f in findings) for v in VERDICTS}


def _value(f: Finding) -> str:
    if f.measured is None or not math.isfinite(f.measured):
        return "not measurable"
    text = f"{format_number(f.measured)}{f.unit}"
    if f.low is not None and f.high is not None:
        text += f" [{format_number(f.low)}, {format_number(f.high)}]"
    return text


def to_markdown(docs: Sequence[dict]) -> str:
    lines = [f"# {TITLE}", "", "| table | held | not held | inconclusive |", "|---|---|---|---|"]
    for doc in docs:
        t = tally(doc["findings"])
        lines.append(f"| {doc['table']} | {t[HELD]} | {t[NOT_HELD]} | {t[INCONCLUSIVE]} |")
    for doc in docs:
        lines += ["", f"## {doc['table']}", ""]
        if doc["caption"]:
            lines += [doc["caption"], ""]
        lines += [f"- {w}" for w in doc["warnings"]] + ([""] if doc["warnings"] else [])
        if not doc["findings"]:
            lines.append("No claim could be checked on this table's records.")
            continue
        lines += ["| claim | paper | measured [95 % interval] | interval | n | verdict | note |",
                  "|---|---|---|---|---|---|---|"]
        for f in doc["findings"]:
            cells = [f.claim, f.paper, _value(f), f.interval, str(f.n), f"**{f.verdict}**",
                     f.note]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


_COLOUR = {HELD: "#1a7f37", NOT_HELD: "#cf222e", INCONCLUSIVE: "#9a6700"}
_STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}"
    "th{background:#f4f4f4}.warn{color:#cf222e}.caption{color:#555}"
)


def to_html(docs: Sequence[dict]) -> str:
    e = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(TITLE)}</title>"
           f"<style>{_STYLE}</style></head><body><h1>{e(TITLE)}</h1>",
           "<table><tr><th>table</th>" + "".join(f"<th>{e(v)}</th>" for v in VERDICTS) + "</tr>"]
    for doc in docs:
        t = tally(doc["findings"])
        out.append(f"<tr><td><a href='#{e(doc['table'])}'>{e(doc['table'])}</a></td>"
                   + "".join(f"<td>{t[v]}</td>" for v in VERDICTS) + "</tr>")
    out.append("</table>")
    for doc in docs:
        out.append(f"<h2 id='{e(doc['table'])}'>{e(doc['table'])}</h2>")
        if doc["caption"]:
            out.append(f"<p class='caption'>{e(doc['caption'])}</p>")
        out += [f"<p class='warn'>{e(w)}</p>" for w in doc["warnings"]]
        if not doc["findings"]:
            out.append("<p>No claim could be checked on this table's records.</p>")
            continue
        out.append("<table><tr><th>claim</th><th>paper</th><th>measured [95 % interval]</th>"
                   "<th>interval</th><th>n</th><th>verdict</th><th>note</th></tr>")
        for f in doc["findings"]:
            verdict = (f"<b style='color:{_COLOUR.get(f.verdict, '#000')}'>{e(f.verdict)}</b>")
            out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in (
                f.claim, f.paper, _value(f), f.interval, str(f.n))) + f"<td>{verdict}</td>"
                f"<td>{e(f.note)}</td></tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_findings_page(paths: Sequence[str | Path], out_md: Path, out_html: Path) -> list[dict]:
    """Read every findings.json (in order) and write the page as Markdown and HTML."""
    docs = [load_findings(p) for p in paths]
    markdown, page = to_markdown(docs), to_html(docs)  # both rendered before either is written
    atomic_write_text(out_md, markdown)
    atomic_write_text(out_html, page)
    return docs
