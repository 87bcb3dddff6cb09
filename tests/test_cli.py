"""The CLI's refusals: what it will not start, and why."""

from __future__ import annotations

import os
import subprocess
import sys


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
    return subprocess.run(
        [sys.executable, "-m", "bff", *args], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )


def test_several_workers_need_a_shared_store() -> None:
    result = _run("serve", "--workers", "2", "--port", "1")
    assert result.returncode == 2
    assert "shared session store" in result.stderr


def test_production_needs_a_secret() -> None:
    result = _run("serve", "--port", "1", BFF_ENV="production")
    assert result.returncode != 0
    assert "BFF_SESSION_SECRET" in result.stderr
