"""The page around the inline SVG: CSS and script of the ``netspec draw -o x.html`` output.

No network access: everything is inline.  The script adds pan (drag), zoom
(wheel, buttons), a layer panel (click a layer) and a scope switch (dim the
layers a chosen loss's gradient does not reach).  When it has run without error
it appends ``<div id="netspec-ready">``; opened as ``page.html#selftest`` it also
clicks a layer and walks the scope switch, writing what it saw into
``<pre id="netspec-selftest">`` (the browser test reads it with --dump-dom).
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>__TITLE__</title>
<style>
html, body { margin: 0; height: 100%; font: 13px "DejaVu Sans", Verdana, Arial, sans-serif; color: #222; }
body { display: flex; flex-direction: column; }
header { padding: 6px 10px; background: #f3f3f3; border-bottom: 1px solid #ccc; display: flex; gap: 12px;
         align-items: center; flex-wrap: wrap; }
header h1 { font-size: 15px; margin: 0; }
main { flex: 1; display: flex; min-height: 0; }
#canvas { flex: 1; overflow: hidden; cursor: grab; background: #fff; }
#canvas.dragging { cursor: grabbing; }
#canvas svg { width: 100%; height: 100%; display: block; }
aside { width: 340px; overflow: auto; border-left: 1px solid #ccc; padding: 8px 10px; background: #fbfbfb; }
aside h2 { font-size: 14px; margin: 8px 0 4px; }
aside table { border-collapse: collapse; width: 100%; }
aside td { border-bottom: 1px solid #eee; padding: 2px 4px; vertical-align: top; }
aside pre { background: #f0f0f0; padding: 4px; font-size: 11px; white-space: pre-wrap; }
.swatch { display: inline-block; width: 12px; height: 12px; margin-right: 4px; vertical-align: middle;
          border: 1px solid #555; }
g.layer { cursor: pointer; }
g.layer.selected rect:last-of-type { stroke: #000; stroke-width: 3; }
g.dim { opacity: 0.12; }
ol { padding-left: 20px; margin: 4px 0; }
</style></head>
<body>
<header><h1>__TITLE__</h1>
<label>gradient scope: <select id="scope"></select></label>
<button id="zoom-in" title="zoom in">+</button><button id="zoom-out" title="zoom out">&minus;</button>
<button id="fit">fit</button>
<span style="color:#777">drag to pan, wheel to zoom, click a layer</span></header>
<main><div id="canvas">__SVG__</div>
<aside><div id="panel"><p>Click a layer to see its parameters and shapes.</p></div>
<h2>Losses</h2><div id="losses"></div><h2>Schedule</h2><ol id="steps"></ol></aside></main>
<script type="application/json" id="netspec-data">__DATA__</script>
<script>
__SCRIPT__
</script>
</body></html>
"""

SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("netspec-data").textContent);
  var svg = document.getElementById("netspec-svg");
  var view = document.getElementById("viewport");
  var canvas = document.getElementById("canvas");
  var state = { s: 1, x: 0, y: 0 };

  function el(tag, text) { var e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }
  function apply() { view.setAttribute("transform", "translate(" + state.x + "," + state.y + ") scale(" + state.s + ")"); }
  function toSvg(cx, cy) {
    var p = svg.createSVGPoint(); p.x = cx; p.y = cy;
    return p.matrixTransform(svg.getScreenCTM().inverse());
  }
  function zoomAt(p, k) {
    state.x = p.x - (p.x - state.x) * k; state.y = p.y - (p.y - state.y) * k; state.s *= k; apply();
  }
  function centre() { var r = canvas.getBoundingClientRect(); return toSvg(r.left + r.width / 2, r.top + r.height / 2); }

  // pan and zoom
  canvas.addEventListener("wheel", function (e) {
    e.preventDefault(); zoomAt(toSvg(e.clientX, e.clientY), Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });
  var drag = null;
  canvas.addEventListener("mousedown", function (e) { drag = { x: e.clientX, y: e.clientY, moved: false }; canvas.classList.add("dragging"); });
  window.addEventListener("mousemove", function (e) {
    if (!drag) return;
    var a = toSvg(drag.x, drag.y), b = toSvg(e.clientX, e.clientY);
    state.x += b.x - a.x; state.y += b.y - a.y; drag.x = e.clientX; drag.y = e.clientY; drag.moved = true; apply();
  });
  window.addEventListener("mouseup", function () { canvas.classList.remove("dragging"); setTimeout(function () { drag = null; }, 0); });
  document.getElementById("zoom-in").onclick = function () { zoomAt(centre(), 1.25); };
  document.getElementById("zoom-out").onclick = function () { zoomAt(centre(), 0.8); };
  document.getElementById("fit").onclick = function () { state = { s: 1, x: 0, y: 0 }; apply(); };

  // layer panel
  var layers = Array.prototype.slice.call(svg.querySelectorAll("g.layer"));
  var edges = Array.prototype.slice.call(svg.querySelectorAll("g.edge"));
  function row(table, k, v) { var tr = el("tr"); tr.appendChild(el("td", k)); tr.appendChild(el("td", v)); table.appendChild(tr); }
  function show(name) {
    var d = DATA.layers[name], panel = document.getElementById("panel");
    panel.innerHTML = "";
    panel.appendChild(el("h2", d.name + " (" + d.type + ")"));
    var t = el("table");
    d.bottoms.forEach(function (b) { row(t, "bottom " + b[0], b[1]); });
    d.tops.forEach(function (b) { row(t, "top " + b[0], b[1]); });
    row(t, "parameters", d.params.toLocaleString("en-US"));
    d.blobs.forEach(function (s, i) { row(t, "blob " + i, s.join(" x ")); });
    row(t, "gradient from", d.losses.length ? d.losses.join(", ") : "(none)");
    if (d.in_place) row(t, "in place", "yes");
    panel.appendChild(t);
    panel.appendChild(el("pre", d.prototxt));
    layers.forEach(function (g) { g.classList.toggle("selected", g.dataset.layer === name); });
  }
  layers.forEach(function (g) {
    g.addEventListener("click", function (e) { if (drag && drag.moved) return; e.stopPropagation(); show(g.dataset.layer); });
  });

  // scope switch
  var select = document.getElementById("scope");
  var all = el("option", "all losses (" + DATA.mode + ")"); all.value = ""; select.appendChild(all);
  DATA.losses.forEach(function (l) { var o = el("option", l.name); o.value = l.name; select.appendChild(o); });
  function scope(loss) {
    var dimmed = {};
    layers.forEach(function (g) {
      var has = g.dataset.losses ? g.dataset.losses.split(",") : [];
      var dim = loss !== "" && has.indexOf(loss) < 0;
      g.classList.toggle("dim", dim); if (dim) dimmed[g.dataset.layer] = true;
    });
    edges.forEach(function (g) { g.classList.toggle("dim", !!(dimmed[g.dataset.src] || dimmed[g.dataset.dst])); });
    return Object.keys(dimmed).length;
  }
  select.onchange = function () { scope(select.value); };

  // legend
  var box = document.getElementById("losses");
  DATA.losses.forEach(function (l) {
    var p = el("div"), sw = el("span"); sw.className = "swatch"; sw.style.background = l.color;
    p.appendChild(sw); p.appendChild(document.createTextNode(l.name + ": " + l.text + (l.trained ? "" : " (not trained)")));
    box.appendChild(p);
  });
  DATA.steps.forEach(function (s) { document.getElementById("steps").appendChild(el("li", s.replace(/^\d+\.\s*/, ""))); });

  if (location.hash === "#selftest") {
    var first = layers[layers.length - 1];
    first.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    var result = { clicked: first.dataset.layer, panel: document.querySelector("#panel h2").textContent, dimmed: {} };
    DATA.losses.forEach(function (l) { result.dimmed[l.name] = scope(l.name); });
    result.dimmed[""] = scope("");
    zoomAt(centre(), 1.5); result.transform = view.getAttribute("transform");
    var pre = el("pre", JSON.stringify(result)); pre.id = "netspec-selftest"; document.body.appendChild(pre);
  }
  var ready = el("div"); ready.id = "netspec-ready"; ready.hidden = true; document.body.appendChild(ready);
})();
"""
