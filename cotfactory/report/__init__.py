"""``report/``: one self-contained HTML page with plots of a run — funnel, agreement, scores, yield, students,
and where each student fails next to what it learned from (``cotfactory.lineage``).

``write_report(run_dir)`` reads what the run directory holds (the samples and the store are required; the
funnel, the kept samples and the students are shown when present) into ``ReportData`` (``read.py``,
``data.py``), writes it to ``report/report.json``, draws one PNG per plot (``plots.py``) and writes
``report/report.html`` (``html.py``), which refers to the PNGs by relative name.
"""

from __future__ import annotations

from pathlib import Path

from cotfactory.report.data import ReportData
from cotfactory.report.html import render_html
from cotfactory.report.plots import draw_plots, matplotlib_figure
from cotfactory.report.read import read_report_data
from cotfactory.run_dir import RunDir, write_json_atomic, write_text_atomic

__all__ = ["ReportData", "draw_plots", "read_report_data", "render_html", "write_report"]


def write_report(run_dir: Path) -> Path:
    """Write ``RUN_DIR/report/{report.html, report.json, *.png}``; returns the HTML file's path."""
    run = RunDir(run_dir)
    figure_class = matplotlib_figure()  # fails here, before anything is written
    data = read_report_data(run)
    run.report_dir.mkdir(parents=True, exist_ok=True)
    for stale in run.report_dir.glob("*.png"):  # the folder is ours: a plot skipped this time must not linger
        stale.unlink()
    data = draw_plots(data, run.report_dir, figure_class)
    write_json_atomic(run.report_json, data.to_json())
    write_text_atomic(run.report_html, render_html(data))
    for path in (run.report_json, run.report_html):
        path.chmod(0o644)  # atomic writes come out 0600 (mkstemp); a report is meant to be shared, like its PNGs
    return run.report_html
