"""Self-contained HTML diagnostics reports: :class:`Page` (the builder), :func:`report` (any result) and
:func:`browser_check` (load a page in headless Chromium and test that every figure renders)."""

from pssm.reporting.browser import browser_check, count_figures
from pssm.reporting.page import Page
from pssm.reporting.report import report

__all__ = ["Page", "browser_check", "count_figures", "report"]
