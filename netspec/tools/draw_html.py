"""Write a drawing as one self-contained HTML page: inline SVG, data, CSS and script."""
from __future__ import annotations

import json
from html import escape

from .draw_svg import to_svg
from .html_template import PAGE, SCRIPT


def to_html(drawing, placed) -> str:
    data = {"mode": drawing.mode, "steps": drawing.steps,
            "losses": [{"name": l.name, "color": l.color, "text": l.text, "trained": l.trained}
                       for l in drawing.losses],
            "layers": {n.name: n.detail for n in drawing.nodes.values()}}
    blob = json.dumps(data).replace("</", "<\\/")          # keep "</script>" out of the JSON
    page = PAGE.replace("__TITLE__", escape(drawing.title))
    return (page.replace("__SVG__", to_svg(drawing, placed, standalone=False))
                .replace("__DATA__", blob).replace("__SCRIPT__", SCRIPT))
