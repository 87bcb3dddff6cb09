"""The README's test command and CI are one command on one dependency set (issue 22)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from scripts.lockcheck import differences

ROOT = Path(__file__).resolve().parent.parent


def _readme_command() -> str:
    result = subprocess.run(
        [str(ROOT / ".ci/readme-test-command"), str(ROOT / "README.md")], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = _readme_command()
    assert command == "scripts/test"
    ci = (ROOT / ".ci/run").read_text()
    # CI takes the command from the README and installs no Python package of its own
    assert '"$(.ci/readme-test-command README.md)"' in ci
    assert 'exec bash -euo pipefail -c "$command"' in ci
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


def test_lockcheck_names_a_missing_or_other_version(tmp_path: Path) -> None:
    lock = tmp_path / "dev.lock"
    lock.write_text("packaging==0.0.1\nno-such-package-bff==1.0\n# a comment\n")
    problems = differences(lock, ROOT)
    assert any(p.startswith("packaging:") and "installed" in p for p in problems)
    assert any(p.startswith("no-such-package-bff: missing") for p in problems)
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
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/lockcheck.py"), str(ROOT / "requirements/dev.lock")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
