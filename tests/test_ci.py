"""The README's test command and CI are one command on one dependency set (issue 22)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from scripts.lockcheck import KEY_PACKAGES, differences, versions

ROOT = Path(__file__).resolve().parent.parent
#: set by `scripts/test --unlocked`: this environment has the newest allowed versions, not the lock's
UNLOCKED = os.environ.get("BFF_TEST_UNLOCKED") == "1"


def _readme_command() -> str:
    result = subprocess.run(
        [str(ROOT / ".ci/readme-test-command"), str(ROOT / "README.md")], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_ci_runs_the_readme_test_command_then_the_unlocked_run() -> None:
    command = _readme_command()
    assert command == "scripts/test"
    ci = (ROOT / ".ci/run").read_text()
    # CI takes the command from the README and installs no Python package of its own
    assert '"$(.ci/readme-test-command README.md)"' in ci
    locked = ci.index('bash -euo pipefail -c "$command" || locked=$?')
    # then the same suite on the newest versions pyproject.toml allows (issue 25), whatever the first run gave
    unlocked = ci.index("scripts/test --unlocked || unlocked=$?")
    assert locked < unlocked
    assert "exec " not in ci  # the first run does not end the script
    assert ci.rstrip().endswith('[ "$locked" -eq 0 ] && [ "$unlocked" -eq 0 ]')  # either failing fails CI
    assert "pip install" not in ci


def test_readme_command_extraction_fails_without_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# no marker here\n\n```bash\nscripts/test\n```\n")
    result = subprocess.run([str(ROOT / ".ci/readme-test-command"), str(readme)], capture_output=True, text=True)
    assert result.returncode == 1
    readme.write_text("<!-- test-command -->\n```bash\nmake check\n```\n\n```bash\nother\n```\n")
    result = subprocess.run([str(ROOT / ".ci/readme-test-command"), str(readme)], capture_output=True, text=True)
    assert result.stdout == "make check\n"


def test_the_test_command_installs_the_lock_when_anything_differs() -> None:
    script = (ROOT / "scripts/test").read_text()
    check = script.index("scripts/lockcheck.py requirements/dev.lock")
    assert script.index("-r requirements/dev.lock") > check
    assert check < script.index("mypy bff")  # before any check that depends on the versions


_STUB = """#!/usr/bin/env bash
# records its command line; `scripts/lockcheck.py LOCK` fails once (this Python lacks the lock), then passes
echo "$(basename "$0") $*" >>"$STUB_LOG"
if [ "${1:-}" = scripts/lockcheck.py ] && [ "${2:-}" = requirements/dev.lock ] && [ ! -e "$STUB_LOG.checked" ]; then
  touch "$STUB_LOG.checked"
  exit 1
fi
exit 0
"""


def _dry_run(tmp_path: Path, *args: str) -> list[str]:
    """scripts/test with every program it runs (python, pip through python, ruff, mypy, bff, npm) replaced
    by a stub that records its command line: the commands each path runs, in order, in well under a second."""
    # the script must take the stub venv from this variable: otherwise it would install into the real one
    assert "${BFF_TEST_UNLOCKED_VENV:-.venv-unlocked}" in (ROOT / "scripts/test").read_text()
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("python", "ruff", "mypy", "bff", "npm"):
        (bin_dir / name).write_text(_STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "commands.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "BFF_TEST_UNLOCKED_VENV": str(tmp_path / "venv"),
        "BFF_TEST_WORKERS": "2",
    }
    env.pop("VIRTUAL_ENV", None)
    env.pop("BFF_TEST_UNLOCKED", None)
    result = subprocess.run([str(ROOT / "scripts/test"), *args], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return log.read_text().splitlines()


def test_the_locked_run_installs_the_lock_then_runs_every_phase(tmp_path: Path) -> None:
    commands = _dry_run(tmp_path, "-k", "refresh")
    assert commands[0] == "python scripts/lockcheck.py requirements/dev.lock"
    assert any("pip install" in c and "-r requirements/dev.lock" in c for c in commands)
    assert not any("--upgrade" in c or "[dev]" in c for c in commands)
    assert "mypy bff" in commands
    assert commands[-1] == "python -m pytest -p no:benchmark -m serial -k refresh"


def test_the_unlocked_run_installs_the_newest_allowed_versions_and_never_the_lock(tmp_path: Path) -> None:
    commands = _dry_run(tmp_path, "--unlocked", "-k", "refresh")
    installs = [c for c in commands if " -m pip install " in c]
    assert any("--upgrade --upgrade-strategy eager -e .[dev]" in c for c in installs), installs
    assert any("--no-deps -e examples/team[test]" in c for c in installs), installs
    # the lock is read only to print the resolved versions beside its pins: never installed, never required
    assert not any("-r " in c or "dev.lock" in c or "runtime.lock" in c for c in installs), installs
    assert [c for c in commands if "dev.lock" in c] == ["python scripts/lockcheck.py --versions requirements/dev.lock"]
    versions = commands.index("python scripts/lockcheck.py --versions requirements/dev.lock")
    # the same phases as the locked run, after the install and the version report
    phases = [
        "ruff check bff tests scripts examples/team",
        "mypy bff",
        "bff export-schema --schema team_bff.schema:schema --check",
    ]
    assert versions < min(commands.index(c) for c in phases)
    assert commands[-2].startswith("python -m pytest -p no:benchmark -n 2 --dist loadfile")
    assert commands[-2].endswith("-k refresh") and "--unlocked" not in commands[-2]
    assert commands[-1] == "python -m pytest -p no:benchmark -m serial -k refresh"


def test_the_version_report_names_each_key_package_beside_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "dev.lock"
    lock.write_text(f"packaging=={metadata.version('packaging')}\nstrawberry-graphql==0.0.1\n")
    lines = versions(lock, ("packaging", "strawberry-graphql", "no-such-package-bff"))
    assert lines[0].split() == ["packaging", metadata.version("packaging"), "=", "lock"]
    assert lines[1].split()[-1] == "0.0.1)" and "(lock:" in lines[1]
    assert lines[2].split()[:2] == ["no-such-package-bff", "missing"]
    assert {"strawberry-graphql", "graphql-core", "uvicorn", "redis", "httpx", "pydantic"} <= set(KEY_PACKAGES)


def test_lockcheck_names_a_missing_or_other_version(tmp_path: Path) -> None:
    lock = tmp_path / "dev.lock"
    lock.write_text("packaging==0.0.1\nno-such-package-bff==1.0\n# a comment\n")
    problems = differences(lock, ROOT)
    assert any(p.startswith("packaging:") and "installed" in p for p in problems)
    assert any(p.startswith("no-such-package-bff: missing") for p in problems)
    if not UNLOCKED:
        assert differences(ROOT / "requirements/dev.lock", ROOT) == []  # this environment is the locked one


def test_the_lock_satisfies_every_range_pyproject_declares() -> None:
    """The lock is one point inside pyproject's ranges: a dependency added to pyproject without
    re-locking (or a lock outside a range) fails here, not on a new user's machine."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements/dev.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[Requirement(name).name.lower().replace("_", "-")] = version.strip()
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    declared += project["optional-dependencies"]["otel"]
    for text in declared:
        requirement = Requirement(text)
        if requirement.name == "bff":
            continue
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements/dev.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(requirement))


def test_lockcheck_cli_exit_status() -> None:
    """The command's status is its verdict: 0 with nothing to report, 1 naming each difference. In
    the locked run there is none; the unlocked run (its own venv, the newest allowed versions) runs
    the same check, whose verdict there may go either way, instead of skipping it."""
    lock = ROOT / "requirements/dev.lock"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lockcheck.py"), str(lock)], capture_output=True, text=True
    )
    problems = differences(lock, ROOT)
    assert result.returncode == (1 if problems else 0), result.stderr
    assert [line.removeprefix("lockcheck: ") for line in result.stderr.splitlines()] == problems
    if not UNLOCKED:
        assert result.returncode == 0, result.stderr


def test_a_missing_real_component_fails_under_ci_and_only_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """`missing_component` (a redis-server, node, chromium, the SPA's packages not installed): under
    ``CI`` a failure, never a skip that would hide the missing part; on a developer's machine a skip."""
    from tests.support.servers import missing_component, require_binary

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-bff is not installed"):
        require_binary("no-such-binary-bff", "nothing to install")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        missing_component("absent")
