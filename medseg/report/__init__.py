"""Self-contained ``report.html`` pages of run, inference, comparison and sweep folders."""

from medseg.report.render import report_or_warning, write_report

__all__ = ["report_or_warning", "write_report"]
