"""A self-contained HTML page: text, tables and matplotlib figures embedded as base64 PNGs (no external files).

:class:`Page` is the one builder every report uses (``pssm.report`` for a result, the case studies for their
story): sections in order, each with a heading, paragraphs, tables (pandas ``DataFrame`` or a mapping) and figures.
Cells of a table may be flagged (``flags``: a boolean frame of the same shape) to highlight values that cross a
diagnostic threshold.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Page"]

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}td,th{border:1px solid #ddd;padding:.2em .5em;
text-align:right}th{background:#f4f4f4}td.flag{background:#fdd;color:#900;font-weight:bold}
figure{margin:1em 0}figure img{max-width:100%}figcaption{font-size:.85em;color:#555}
p.note{font-size:.9em;color:#444}
"""


def _figure_png(fig: Any, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _table_html(table: Any, flags: Any, digits: int) -> str:
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(dict(table)).T if _nested(table) else None
    if df is None:
        df = pd.DataFrame({"value": list(table.values())}, index=list(table.keys()))
    fl = None if flags is None else (flags if isinstance(flags, pd.DataFrame) else pd.DataFrame(flags))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for i, idx in enumerate(df.index):
        cells = []
        for j in range(len(df.columns)):
            v = df.iat[i, j]
            text = f"{float(v):.{digits}g}" if isinstance(v, float | np.floating) else str(v)
            bad = fl is not None and bool(fl.iat[i, j])
            cells.append(f'<td class="flag">{html.escape(text)}</td>' if bad else f"<td>{html.escape(text)}</td>")
        rows.append(f"<tr><th>{html.escape(str(idx))}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def _nested(table: Any) -> bool:
    return isinstance(table, Mapping) and all(isinstance(v, Mapping) for v in table.values())


class Page:
    """An HTML page built section by section; ``write(path)`` saves it with every figure embedded.

    >>> page = Page("My fit"); page.section("Objective"); page.figure(fig, "EM objective per iteration")
    >>> page.write("report.html")
    """

    def __init__(self, title: str, *, dpi: int = 90):
        self.title = title
        self.dpi = dpi
        self._parts: list[str] = []
        self.num_figures = 0

    def section(self, heading: str) -> Page:
        """Start a new section with ``heading``."""
        self._parts.append(f"<h2>{html.escape(heading)}</h2>")
        return self

    def text(self, paragraph: str, *, note: bool = False) -> Page:
        """Add a paragraph (plain text, HTML-escaped)."""
        cls = ' class="note"' if note else ""
        self._parts.append(f"<p{cls}>{html.escape(paragraph)}</p>")
        return self

    def table(self, table: Any, *, flags: Any = None, caption: str | None = None, digits: int = 4) -> Page:
        """Add a table: a ``DataFrame``, a mapping of scalars, or a mapping of mappings (rows of columns).

        ``flags``: booleans of the same shape as the frame; flagged cells are highlighted.
        """
        if caption:
            self._parts.append(f"<p><b>{html.escape(caption)}</b></p>")
        self._parts.append(_table_html(table, flags, digits))
        return self

    def figure(self, fig: Any, caption: str = "") -> Page:
        """Embed a matplotlib figure as a PNG (the figure is closed afterwards)."""
        data = _figure_png(fig, self.dpi)
        self.num_figures += 1
        alt = html.escape(caption or f"figure {self.num_figures}")
        self._parts.append(
            f'<figure><img class="pssm-figure" alt="{alt}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self

    def html(self) -> str:
        """The whole page as one HTML string."""
        body = "\n".join(self._parts)
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>"
        )

    def write(self, path: str | Path) -> Path:
        """Write the page to ``path`` (parent folders are created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html(), encoding="utf-8")
        return path
