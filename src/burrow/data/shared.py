"""Locating the real corpora the demo and benchmarks use (never copied into the repository).

Search order: an explicit path, else ``$BURROW_DATA``, else ``../shared/data`` and ``shared/data`` from
the working directory and from the repository root. A missing folder is one clear error.
"""

from __future__ import annotations

import os
from pathlib import Path

from burrow.errors import BurrowError

WIKITEXT_TRAIN = "wikitext-2/wiki.train.tokens.gz"
WIKITEXT_VALID = "wikitext-2/wiki.valid.tokens.gz"
WIKITEXT_TEST = "wikitext-2/wiki.test.tokens.gz"
VITAL_SUMMARIES = "wikipedia-vital-summaries/summaries_en.jsonl.gz"


def find_data(path: str | Path | None = None, needs: tuple[str, ...] = (WIKITEXT_TRAIN,)) -> Path:
    """The data folder holding every file in ``needs``."""
    # A folder the user names is the only one tried: silently reading another would be a surprise.
    if path:
        candidates = [Path(path)]
    elif os.environ.get("BURROW_DATA"):
        candidates = [Path(os.environ["BURROW_DATA"])]
    else:
        repo = Path(__file__).resolve().parents[3]
        candidates = [Path.cwd() / "../shared/data", Path.cwd() / "shared/data", repo / "../shared/data"]
    for c in candidates:
        if all((c / n).exists() for n in needs):
            return c.resolve()
    if path:
        where = str(path)
    elif os.environ.get("BURROW_DATA"):
        where = f"{os.environ['BURROW_DATA']} ($BURROW_DATA)"
    else:
        where = "../shared/data"
    raise BurrowError(
        f"no data folder with {', '.join(needs)} at {where}; pass --data DIR (a folder laid out like "
        "shared/data: wikitext-2/, wikipedia-vital-summaries/) or set BURROW_DATA"
    )
