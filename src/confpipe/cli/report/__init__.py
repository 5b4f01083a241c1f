"""The run report: one self-contained HTML page (``render``, ``write_report``) of a run's steps.

page    the page: header, per-step details, the timeline's bars; render and write_report
graph   the DAG's layered layout and its SVG
charts  the timeline (Gantt) and the metric plots as SVG
sweep   a sweep's results table and its plots against the swept value
assets  the page's inline CSS and JS

Used by ``python -m confpipe report`` and ``report_html=PATH`` on a run; may import the cli's
``history`` and ``results``, the engine and storage.
"""

from confpipe.cli.report.page import render, write_report

__all__ = ["render", "write_report"]
