"""Where the tests that type-check generated code keep mypy's cache: one directory per test, kept
between runs (under ``.mypy_cache``, which git ignores), not a fresh one in ``tmp_path``.

With an empty cache mypy analyses bff, Strawberry, Pydantic, FastAPI... before the one generated
module (7-11 s of CPU per test on the 2-core CI machine); with the cache only what changed since the
last run (the generated module, written afresh in ``tmp_path``, and any edited bff module) is checked
again, and incremental mode reports exactly the errors a cold run reports. One directory per test, as
each runs mypy with its own options (a cache written under other options is not reused); the unlocked
run (``scripts/test --unlocked``) has its own, under its ``MYPY_CACHE_DIR``, since its libraries differ."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def mypy_cache_dir(name: str) -> Path:
    """The cache directory for the test named ``name``; pass it as mypy's ``--cache-dir``."""
    return ROOT / os.environ.get("MYPY_CACHE_DIR", ".mypy_cache") / "tests" / name
