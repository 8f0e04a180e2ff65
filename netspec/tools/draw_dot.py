"""Write a drawing as graphviz DOT text (no graphviz needed to write it).

Each layer node carries ``losses="a,b"`` and ``aux=true|false`` attributes (graphviz
keeps unknown attributes), is filled with its losses' colours (``style=striped``
when several reach it) and dashed when auxiliary.  The legend is a note node.
"""
from __future__ import annotations

from .draw_scene import tint


def q(text: str) -> str:
    """A DOT double-quoted string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(drawing) -> str:
    out = [f"digraph {q(drawing.title)} {{", f"  rankdir={drawing.rankdir};",
           f"  label={q(drawing.title)}; labelloc=t;",
           '  node [shape=box, fontname="DejaVu Sans", fontsize=10];',
           '  edge [fontname="DejaVu Sans", fontsize=8, color="#555555"];']
    out += [_node(drawing, n) for n in drawing.nodes.values()]
    for e in drawing.edges:
        blob = e.label.split("@")[0]
        label = f" [label={q(blob)}]" if blob != e.src else ""
        out.append(f"  {q(e.src)} -> {q(e.dst)}{label};")
    out.append(_legend(drawing))
    out.append("}")
    return "\n".join(out) + "\n"


def _node(drawing, node) -> str:
    title = f"{node.name} ({node.type})" if node.in_place else node.name
    label = "\n".join([title] + node.lines)
    colors = [tint(drawing.color(l)) for l in node.losses] or ["#ffffff"]
    style = ["striped" if len(colors) > 1 else "filled"] + (["dashed"] if node.aux else [])
    attrs = {"label": label, "style": ",".join(style), "fillcolor": ":".join(colors),
             "losses": ",".join(node.losses), "aux": "true" if node.aux else "false",
             "type": node.type}
    if node.is_loss and node.name in {l.name for l in drawing.losses}:
        attrs |= {"color": drawing.color(node.name), "penwidth": "2.5"}
    return f"  {q(node.name)} [" + ", ".join(f"{k}={q(v)}" for k, v in attrs.items()) + "];"


def _legend(drawing) -> str:
    lines = [f"{l.name}: {l.text}" + ("" if l.trained else " (not trained)") for l in drawing.losses]
    lines += ["", f"schedule ({drawing.mode}):"] + drawing.steps
    text = "\\l".join(s.replace("\\", "\\\\").replace('"', '\\"') for s in lines) + "\\l"
    return f'  "__legend__" [shape=note, label="{text}", style=filled, fillcolor="#fafafa"];'
