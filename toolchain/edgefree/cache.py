"""Where edgefree keeps things it derives once (decoded data sets, exported teachers, the arm64 root)."""

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$EDGEFREE_CACHE`` or ``~/.cache/edgefree``, with ``parts`` appended and created."""
    root = Path(os.environ.get("EDGEFREE_CACHE") or Path.home() / ".cache" / "edgefree")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
