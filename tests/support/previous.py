"""The previous release, run for real beside this checkout: rolling upgrades mix two versions of the
BFF on one session store, so a change of what they share (the record format, the cookie, the refresh
claim) is only proven compatible by running the old code itself, not a copy of its assumptions.

``previous_release(ref)`` checks ``ref`` out in a temporary, detached git worktree (removed
afterwards); `PreviousReplica` runs ``python -m bff serve`` from it, with ``PYTHONPATH`` pointing at
that worktree so ``import bff`` gets the old code rather than the editable install of this checkout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
#: 0.2, the release a fleet is upgraded from
PREVIOUS_REF = "c1cd515"


def _git(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        # a missing git would silently drop the compatibility guard: fail, never skip
        pytest.fail("git is not installed: the rolling-upgrade tests check out the previous release", pytrace=False)
    return subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def settings_env(settings: Mapping[str, Any], prefix: str = "BFF_") -> dict[str, str]:
    """``Settings`` field values as the ``BFF_*`` variables the old release reads: nested mappings
    joined by ``__`` (``BFF_UPSTREAMS__ACCOUNTS__URL``), lists comma-separated, booleans
    ``true``/``false``, ``None`` left out."""
    env: dict[str, str] = {}
    for key, value in settings.items():
        name = f"{prefix}{key.upper()}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            env.update(settings_env(value, f"{name}__"))
        elif isinstance(value, bool):
            env[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            env[name] = ",".join(str(item) for item in value)
        else:
            secret = getattr(value, "get_secret_value", None)
            env[name] = str(secret() if callable(secret) else value)
    return env


@dataclass(frozen=True)
class PreviousRelease:
    """A checked-out release: where it is, and the environment that makes Python import it."""

    ref: str
    commit: str
    path: Path

    def env(self, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
        """This process's environment minus any ``BFF_*`` of its own (they would configure the old
        replica behind the test's back), ``PYTHONPATH`` = the worktree, plus ``settings``."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BFF_")}
        env["PYTHONPATH"] = str(self.path)
        env.update(settings_env(settings or {}))
        return env

    def imported_bff(self) -> Path:
        """Where ``import bff`` resolves under `env` (the editable install must not win)."""
        probe = subprocess.run(
            [sys.executable, "-c", "import bff, sys; print(bff.__file__)"],
            cwd=self.path,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if probe.returncode != 0:
            pytest.fail(f"the previous release {self.ref} does not import:\n{probe.stderr}", pytrace=False)
        return Path(probe.stdout.strip()).resolve()

    def replica(self, port: int, settings: Mapping[str, Any]) -> PreviousReplica:
        return PreviousReplica(self, port, settings)


@contextlib.contextmanager
def previous_release(ref: str = PREVIOUS_REF) -> Iterator[PreviousRelease]:
    """A detached worktree of ``ref`` in a temporary directory, removed afterwards. Fails (never
    skips) when git or the ref is missing, and when Python would not import the worktree's ``bff``."""
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != REPO_ROOT:
        pytest.fail(f"{REPO_ROOT} is not the root of a git checkout: {top.stderr.strip()}", pytrace=False)
    found = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if found.returncode != 0:
        pytest.fail(
            f"git ref {ref!r} (the previous release) is not in this repository; a shallow clone? "
            f"run 'git fetch --unshallow' or fetch the tag",
            pytrace=False,
        )
    commit = found.stdout.strip()
    path = Path(tempfile.mkdtemp(prefix=f"bff-previous-{ref}-")).resolve()
    added = _git("worktree", "add", "--detach", "--quiet", str(path), commit)
    if added.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        pytest.fail(f"git worktree add of {ref} failed: {added.stderr.strip()}", pytrace=False)
    try:
        release = PreviousRelease(ref, commit, path)
        imported = release.imported_bff()
        assert imported.is_relative_to(path), (
            f"PYTHONPATH={path} still imports bff from {imported}: the replicas would run this checkout's code"
        )
        yield release
    finally:
        removed = _git("worktree", "remove", "--force", str(path))
        if removed.returncode != 0:  # a worktree git no longer knows: its directory and any leftover entry
            shutil.rmtree(path, ignore_errors=True)
            _git("worktree", "prune")


class PreviousReplica:
    """One replica of the previous release as its own process (``python -m bff serve``), configured
    only by ``BFF_*`` variables like a deployed one; its JSON log lines go to a file (`output`)."""

    def __init__(self, release: PreviousRelease, port: int, settings: Mapping[str, Any]) -> None:
        self.release = release
        self.port = port
        self.env = release.env(settings)
        self.proc: subprocess.Popen[bytes] | None = None
        log = tempfile.NamedTemporaryFile(prefix=f"bff-previous-{port}-", suffix=".log", delete=False)
        log.close()
        self.log_path = Path(log.name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> PreviousReplica:
        """Start and wait until ``GET /healthz`` answers (blocking: from async code use a thread)."""
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                # another process (a parallel test run?) listens there: its /healthz would pass for ours
                raise RuntimeError(f"port {self.port} is already in use: not starting the previous replica there")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bff", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.release.path,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C at the terminal goes to pytest, which stops us
            )
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise RuntimeError(f"previous replica on {self.port} exited with {code}:\n{self.output()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"previous replica on {self.port} not healthy in {timeout} s:\n{self.output()}")
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM (uvicorn's graceful shutdown: in-flight requests and refreshes finish), then
        SIGKILL after ``timeout``; the exit code (negative: the signal that ended it)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def kill(self) -> int | None:
        """SIGKILL: a replica that dies without any shutdown."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait(10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cleanup(self) -> None:
        """Stop, and remove the log file."""
        self.stop()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> PreviousReplica:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.cleanup()
