"""Evaluation reports: PNG plots (matplotlib, Agg backend) and a self-contained HTML page.

:mod:`.plots` draws one figure per function and writes it to a PNG path;
:mod:`.alerts` turns ground truth and alert events into the alert report;
:mod:`.html` writes the page (relative PNG links, no scripts, no CDN).
"""
