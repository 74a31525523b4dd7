"""Render `snakemake --rulegraph` as a PNG without Graphviz (networkx + matplotlib).

    python workflow/scripts/rulegraph.py [targets ...] > /dev/null   # writes the README picture

Rules are placed in layers by their longest distance from a source rule (data flows left to
right); where Graphviz's `dot` is installed, `snakemake --rulegraph | dot -Tpng` works too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "workflow" / "report" / "rulegraph.png"
DEFAULT_TARGETS = ["all", "findings", "transfer_tables", "pcfg_tables", "primer_table"]


def rulegraph(targets: list[str]) -> nx.DiGraph:
    dot = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), *targets, "--rulegraph", "dot"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    graph = nx.DiGraph()
    for node, label in re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.M):
        graph.add_node(int(node), label=label)
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M):
        graph.add_edge(int(a), int(b))
    return graph


def draw(graph: nx.DiGraph, path: Path) -> None:
    layer = {}
    for node in nx.topological_sort(graph):
        layer[node] = max((layer[p] + 1 for p in graph.predecessors(node)), default=0)
    for node, value in layer.items():
        graph.nodes[node]["layer"] = value
    pos = nx.multipartite_layout(graph, subset_key="layer", align="vertical")
    fig, ax = plt.subplots(figsize=(2.3 * (max(layer.values()) + 1), 7))
    nx.draw_networkx_edges(graph, pos, ax=ax, arrows=True, arrowsize=10, edge_color="#888",
                           node_size=2200)
    nx.draw_networkx_labels(
        graph, pos, labels=nx.get_node_attributes(graph, "label"), ax=ax, font_size=8,
        bbox={"boxstyle": "round,pad=0.3", "fc": "#e8f0fe", "ec": "#4a6fa5"},
    )
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    draw(rulegraph(sys.argv[1:] or DEFAULT_TARGETS), OUT)
    print(OUT)
