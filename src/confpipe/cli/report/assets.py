"""The run report's inline CSS and JS (``page`` puts them in the page).

The CSS colours each state by a class (``s-failed`` sets ``--c``, the fill, and ``--t``, the
text on it), so the SVG nodes and bars carry a class, not a colour. The JS only adds:
opening a step's details when a link jumps to it, a filter box and expand/collapse buttons
(hidden until the script runs, so the page reads the same without it), and ``data-ready``
on <body> once it ran.
"""

from __future__ import annotations

__all__ = ["CSS", "JS"]

CSS = """
:root{--fg:#1d2330;--muted:#667085;--line:#d9dee7;--bg:#f6f7fa;--card:#fff;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{background:#1f2a44;color:#fff;padding:18px 28px 14px}
header h1{margin:0 0 4px;font-size:22px;font-weight:600}
header .meta{margin:0 0 10px;color:#c5cee0}
header code{color:#fff}
header nav{margin-top:10px}
header nav a{color:#aecbff}
section{background:var(--card);margin:18px 24px;padding:6px 20px 16px;border-radius:8px;
border:1px solid var(--line)}
h2{font-size:17px;margin:12px 0 6px}
h4{margin:12px 0 4px;font-size:13px;color:var(--muted);text-transform:uppercase;
letter-spacing:.04em}
code,pre{font-family:var(--mono);font-size:12px}
pre{background:#f3f5f9;border:1px solid var(--line);border-radius:6px;padding:8px 10px;
margin:0;white-space:pre-wrap;word-break:break-word;max-height:420px;overflow:auto}
pre.err{background:#fff3f2;border-color:#f3c3bf}
.hint,.cut,.muted{color:var(--muted)}
.hint{margin:4px 0 8px}
.cut{margin:2px 0;font-size:12px}
.scroll{overflow:auto;max-height:75vh;border:1px solid var(--line);border-radius:6px;
background:#fcfcfd}
.s-succeeded{--c:#2f9e5f;--t:#fff}
.s-running{--c:#2f74d0;--t:#fff}
.s-failed{--c:#d64541;--t:#fff}
.s-interrupted{--c:#8e6bbf;--t:#fff}
.s-dep-failed{--c:#e89b3c;--t:#1d2330}
.s-not-run{--c:#c3c8d2;--t:#1d2330}
.badge{display:inline-block;background:var(--c);color:var(--t);border-radius:10px;
padding:0 8px;font-size:12px;line-height:19px;white-space:nowrap}
.counts .badge{margin-right:6px;font-size:13px;line-height:22px;padding:0 10px}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:4px 0 8px;font-size:12px;color:var(--muted)}
.legend i{display:inline-block;width:14px;height:12px;border-radius:3px;margin-right:5px;
vertical-align:-1px;background:var(--c)}
.legend .marked i{background:#fff;border:2px dashed #b7791f}
.legend .t-thread i{background:#5b8def}
.legend .t-job i{background:repeating-linear-gradient(45deg,#5b8def 0 3px,#2b4f9a 3px 6px)}
.legend .t-wait i{background:#cfd8ea}
svg text{font-family:var(--mono);font-size:12px}
.dag .edges path{fill:none;stroke:#9aa4b5;stroke-width:1.3;marker-end:url(#arrow)}
.dag marker path{fill:#9aa4b5}
.dag rect{fill:var(--c);stroke:rgba(0,0,0,.15)}
.dag text{fill:var(--t)}
.dag a.marked rect{stroke:#b7791f;stroke-width:2.5;stroke-dasharray:5 3}
.dag a:hover rect{stroke:#1d2330;stroke-width:2}
.gantt .axis line{stroke:#e3e7ee}
.gantt .axis text{fill:var(--muted);text-anchor:middle;font-size:11px}
.gantt .stripe{fill:#f5f7fb}
.gantt .row text{fill:var(--fg)}
.gantt .row a text{fill:#1f4fa3}
.gantt .row text.where{fill:var(--muted);text-anchor:end;font-size:11px}
.gantt .bar{fill:var(--c)}
.gantt .wait{fill:#cfd8ea}
.gantt .job{fill:url(#hatch);pointer-events:none}
.gantt pattern rect{fill:rgba(0,0,0,.28)}
.never{color:var(--muted)}
details.step{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
details.step>summary{cursor:pointer;padding:6px 10px;list-style-position:inside}
details.step[open]>summary{border-bottom:1px solid var(--line);background:#f8f9fc}
details.step .body{padding:4px 14px 12px}
details.step:target{outline:2px solid #2f74d0}
.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:8px 0}
.facts dt{color:var(--muted)}
.facts dd{margin:0;word-break:break-all}
.warn{color:#9a5b00;font-weight:600}
.err{color:#b42318}
.tools{display:flex;gap:8px;margin:4px 0 10px}
.tools input{flex:0 1 320px;padding:4px 8px;border:1px solid var(--line);border-radius:5px}
.tools button{padding:4px 10px;border:1px solid var(--line);border-radius:5px;background:#fff;
cursor:pointer}
table.results{border-collapse:collapse;font-size:13px}
.scroll.fit{width:fit-content;max-width:100%}
.results th,.results td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;
vertical-align:top}
.results th{background:#f3f5f9;position:sticky;top:0}
.results th.num{text-align:right}
.results td.num{text-align:right;font-family:var(--mono);font-size:12px}
.plots{display:flex;flex-wrap:wrap;gap:12px;margin-top:14px}
.plots figure{margin:0;border:1px solid var(--line);border-radius:6px;background:#fff}
.plots figure p{margin:0 10px 6px}
.plot .title{font-family:inherit;font-weight:600;font-size:13px;fill:var(--fg)}
.plot .axis line{stroke:#e6e9ef}
.plot .axis line.frame,.plot .axis line.tick{stroke:#8d96a7}
.plot .axis text{fill:var(--muted);font-size:11px}
.plot text.y{text-anchor:end}
.plot text.x{text-anchor:middle}
.plot text.cat{text-anchor:end}
.plot .xlabel{text-anchor:middle;fill:var(--muted);font-size:12px}
.plot .line{fill:none;stroke:#2f74d0;stroke-width:2}
.plot circle{fill:#2f74d0;stroke:#fff;stroke-width:1.5}
"""

JS = """
(function () {
  "use strict";
  var steps = Array.prototype.slice.call(document.querySelectorAll("details.step"));
  function reveal() {
    var target = location.hash ? document.getElementById(location.hash.slice(1)) : null;
    if (target && target.tagName === "DETAILS") { target.open = true; }
  }
  window.addEventListener("hashchange", reveal);
  reveal();
  var tools = document.getElementById("tools");
  var filter = document.getElementById("filter");
  if (tools && filter) {
    tools.hidden = false;
    filter.addEventListener("input", function () {
      var words = filter.value.toLowerCase().trim();
      steps.forEach(function (d) {
        d.hidden = words !== "" && d.getAttribute("data-search").indexOf(words) < 0;
      });
    });
    var setAll = function (open) {
      steps.forEach(function (d) { if (!d.hidden) { d.open = open; } });
    };
    document.getElementById("expand").addEventListener("click", function () { setAll(true); });
    document.getElementById("collapse").addEventListener("click", function () { setAll(false); });
  }
  document.body.setAttribute("data-ready", String(steps.length));
})();
"""
