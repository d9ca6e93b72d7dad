"""Build ``data/bach_chorales.npz`` (88-key piano rolls of music21's Bach chorales, train/valid/test split).

Run from any directory: ``python data/build_bach_chorales.py`` (needs music21; ~1 min). Prints a one-line JSON
summary. See ``data/README.md`` and :mod:`pssm.datasets` for the encoding and the split.
"""

import json
from pathlib import Path

from pssm.datasets import build_bach_chorales

OUT = Path(__file__).resolve().parent / "bach_chorales.npz"

if __name__ == "__main__":
    print(json.dumps(build_bach_chorales(OUT)))
