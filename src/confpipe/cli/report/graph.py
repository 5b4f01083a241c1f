"""The run report's DAG: laid out in layers and drawn as inline SVG, coloured by state.

A node's layer is its longest path from a root; within a layer, a barycentre pass (down,
up, down) orders nodes by the mean place of their neighbours, which uncrosses the usual
fan-outs and fan-ins. Layers are columns, left to right; a tall layer scrolls. The work and
the SVG grow with nodes plus edges, never with their product. Colours come from the page's
CSS (a class per state), so each node costs a few bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from itertools import accumulate

__all__ = ["Node", "dag_svg", "layers", "order"]

ROW = 34  # px between node centres in a column
BOX = 24  # a node's height
GAP = 56  # px between columns, where the edges run
PAD = 12
CHAR = 7.3  # px per character of the 12px monospace label
MAX_CHARS = 34  # a longer label is cut (the tooltip has it whole)
CENTRED = 16  # columns are centred when the tallest has at most this many rows; else top
# aligned, so that the root of a wide fan-out is in view, not half a scroll down


@dataclass(frozen=True)
class Node:
    """One step as the graph draws it."""

    label: str
    state: str  # the CSS class of its state, e.g. ``s-failed``
    anchor: str  # the id of its details on the page
    tip: str  # tooltip: state and reason
    marked: bool = False  # its code changed since its output was made: dashed outline


def layers(parents: Sequence[Sequence[int]]) -> list[int]:
    """Each node's layer: its longest path from a root (a node without parents). A cycle,
    which compiled steps never have, leaves its nodes in the layer reached so far."""
    children: list[list[int]] = [[] for _ in parents]
    pending = [len(ps) for ps in parents]
    for child, ps in enumerate(parents):
        for p in ps:
            children[p].append(child)
    layer = [0] * len(parents)
    ready = [i for i, n in enumerate(pending) if n == 0]
    while ready:
        i = ready.pop()
        for child in children[i]:
            layer[child] = max(layer[child], layer[i] + 1)
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
    return layer


def order(
    parents: Sequence[Sequence[int]], layer: Sequence[int]
) -> tuple[list[list[int]], list[float]]:
    """The columns (node indices, top to bottom) and each node's row (fractional: a short
    column is centred against the tallest, in a small graph)."""
    columns: list[list[int]] = [[] for _ in range(max(layer, default=-1) + 1)]
    for i, at in enumerate(layer):
        columns[at].append(i)
    children: list[list[int]] = [[] for _ in parents]
    for child, ps in enumerate(parents):
        for p in ps:
            children[p].append(child)
    tallest = max((len(c) for c in columns), default=0)
    row = [0.0] * len(parents)

    def place(column: list[int]) -> None:
        offset = (tallest - len(column)) / 2 if tallest <= CENTRED else 0
        for r, i in enumerate(column):
            row[i] = offset + r

    def centre(neighbours: Sequence[int], own: float) -> float:
        return sum(row[j] for j in neighbours) / len(neighbours) if neighbours else own

    for column in columns:
        place(column)
    passes = ((parents, columns[1:]), (children, columns[-2::-1]), (parents, columns[1:]))
    for neighbours, sequence in passes:
        for column in sequence:
            column.sort(key=lambda i: centre(neighbours[i], row[i]))
            place(column)
    return columns, row


def _cut(label: str, chars: int) -> str:
    return label if len(label) <= chars else label[: chars - 1] + "…"


def dag_svg(nodes: Sequence[Node], parents: Sequence[Sequence[int]]) -> str:
    """The graph as an ``<svg>``: a box per node (a link to its details), an arrow per edge
    from a dependency to its dependent."""
    if not nodes:
        return ""
    layer = layers(parents)
    columns, row = order(parents, layer)
    widths = [
        max(90.0, min(MAX_CHARS, max(len(nodes[i].label) for i in c)) * CHAR + 16) for c in columns
    ]
    lefts = [PAD + before + GAP * k for k, before in enumerate(accumulate(widths[:-1], initial=0))]
    width = lefts[-1] + widths[-1] + PAD
    height = PAD * 2 + max(len(c) for c in columns) * ROW

    def top(i: int) -> float:
        return PAD + row[i] * ROW + (ROW - BOX) / 2

    out = [
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="the steps and their dependencies">',
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0L8,4L0,8z"/></marker></defs>',
        '<g class="edges">',
    ]
    for child, ps in enumerate(parents):
        x2, y2 = lefts[layer[child]], top(child) + BOX / 2
        for p in ps:
            x1, y1 = lefts[layer[p]] + widths[layer[p]], top(p) + BOX / 2
            bend = max(GAP / 2, (x2 - x1) / 3)
            out.append(
                f'<path d="M{x1:.0f},{y1:.1f}C{x1 + bend:.0f},{y1:.1f} {x2 - bend:.0f},{y2:.1f} '
                f'{x2 - 1:.0f},{y2:.1f}"/>'
            )
    out.append('</g><g class="nodes">')
    for i, node in enumerate(nodes):
        x, y, w = lefts[layer[i]], top(i), widths[layer[i]]
        chars = int((w - 16) / CHAR)
        marked = " marked" if node.marked else ""
        out.append(
            f'<a href="#{escape(node.anchor)}" class="{escape(node.state)}{marked}">'
            f"<title>{escape(node.label)}: {escape(node.tip)}</title>"
            f'<rect x="{x:.0f}" y="{y:.1f}" width="{w:.0f}" height="{BOX}" rx="5"/>'
            f'<text x="{x + 8:.0f}" y="{y + BOX / 2 + 4:.1f}">{escape(_cut(node.label, chars))}'
            "</text></a>"
        )
    out.append("</g></svg>")
    return "".join(out)
