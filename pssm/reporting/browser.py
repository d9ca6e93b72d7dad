"""Check a report in a real browser: headless Chromium loads the page and tests every embedded figure.

:func:`browser_check` injects a small script into a temporary copy of the page; after ``load`` it checks each
``img.pssm-figure`` (``complete && naturalWidth > 0``), draws it to a canvas and counts it as non-blank when its
pixels are not all one colour, then writes the counts into a ``<div id="pssm-browser-check">`` that
``chromium --dump-dom`` prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["browser_check", "count_figures", "find_chromium"]

_CHECK_ID = "pssm-browser-check"
_CHECK_SCRIPT = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.pssm-figure"));
  var loaded = 0, nonblank = 0, errors = [];
  imgs.forEach(function (img, k) {
    if (!(img.complete && img.naturalWidth > 0)) { errors.push("figure " + k + " not loaded"); return; }
    loaded++;
    try {
      var c = document.createElement("canvas");
      c.width = img.naturalWidth; c.height = img.naturalHeight;
      var ctx = c.getContext("2d");
      ctx.drawImage(img, 0, 0);
      var d = ctx.getImageData(0, 0, c.width, c.height).data, differ = 0;
      for (var i = 4; i < d.length; i += 4) {
        if (d[i] !== d[0] || d[i + 1] !== d[1] || d[i + 2] !== d[2] || d[i + 3] !== d[3]) { differ++; }
      }
      if (differ > 0) { nonblank++; } else { errors.push("figure " + k + " is one colour"); }
    } catch (e) { errors.push("figure " + k + ": " + e); }
  });
  var out = document.createElement("div");
  out.id = "__ID__";
  out.setAttribute("data-figures", imgs.length);
  out.setAttribute("data-loaded", loaded);
  out.setAttribute("data-nonblank", nonblank);
  out.setAttribute("data-errors", errors.join("; "));
  document.body.appendChild(out);
});
</script>""".replace("__ID__", _CHECK_ID)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable (``$PSSM_CHROMIUM``, then ``chromium``, ``chromium-browser``,
    ``google-chrome`` on ``PATH``), or ``None``."""
    env = os.environ.get("PSSM_CHROMIUM")
    if env:
        return env if Path(env).exists() or shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def count_figures(path: str | Path) -> int:
    """Number of embedded report figures (``<img class="pssm-figure"``) in the page at ``path``."""
    return len(re.findall(r'<img class="pssm-figure"', Path(path).read_text(encoding="utf-8")))


def browser_check(path: str | Path, *, chromium: str | None = None, timeout: float = 120.0) -> dict[str, int | str]:
    """Load the page at ``path`` in headless Chromium and check its figures.

    Returns ``dict(figures=..., loaded=..., nonblank=..., errors=...)``: the figures the browser found, how many
    loaded (``complete`` with a natural width), how many are not a single uniform colour, and a description of
    each failure (empty when all passed).  Raises ``FileNotFoundError`` when no Chromium is found (install
    Debian's ``chromium`` or set ``$PSSM_CHROMIUM``) and ``RuntimeError`` when the browser gives no result.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError(
            "browser_check needs Chromium: install it (apt-get install -y chromium) or set PSSM_CHROMIUM."
        )
    src = Path(path).read_text(encoding="utf-8")
    page = src.replace("</body>", _CHECK_SCRIPT + "</body>", 1) if "</body>" in src else src + _CHECK_SCRIPT
    with tempfile.TemporaryDirectory(prefix="pssm-browser-") as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(page, encoding="utf-8")
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            copy.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    m = re.search(rf'<div id="{_CHECK_ID}"([^>]*)>', proc.stdout)
    if m is None:
        raise RuntimeError(
            f"Chromium gave no check result (exit {proc.returncode}); stderr tail: {proc.stderr[-800:]!r}"
        )
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', m.group(1)))
    return {
        "figures": int(attrs.get("figures", 0)),
        "loaded": int(attrs.get("loaded", 0)),
        "nonblank": int(attrs.get("nonblank", 0)),
        "errors": attrs.get("errors", ""),
    }
