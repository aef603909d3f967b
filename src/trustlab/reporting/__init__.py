"""Run records (results.json, metrics.csv, plots, report.md) and merged reports."""

from trustlab.reporting.record import RunRecord, summarize

__all__ = ["RunRecord", "summarize"]
