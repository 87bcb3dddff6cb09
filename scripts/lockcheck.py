"""Exit 0 when this Python has exactly what a lock file pins (and bff installed from this checkout),
else print what differs and exit 1. `scripts/test` runs it before anything else and installs the lock
when it fails, so the README's test command and CI always test the same dependency set (issue 22).
A check, not a `pip install -r` on every run: pip takes ~10 s to find that nothing needs doing.

`lockcheck.py --versions LOCK` prints the installed versions of the packages bff's code leans on, each
beside the lock's pin: `scripts/test --unlocked` (the newest allowed versions, issue 25) starts with it,
so a failure there names the versions that caused it."""

from __future__ import annotations

import importlib.util
import sys
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # a fresh venv: nothing of the lock is installed yet
    print("lockcheck: packaging is not installed", file=sys.stderr)
    raise SystemExit(1) from None


def differences(lock: Path, root: Path) -> list[str]:
    problems: list[str] = []
    for line in lock.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith("-"):
            continue
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            problems.append(f"unreadable lock line: {line!r}")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{requirement.name}: missing (lock: {requirement.specifier})")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name}: {installed} installed (lock: {requirement.specifier})")
    spec = importlib.util.find_spec("bff")
    if spec is None or spec.origin is None:
        problems.append("bff: not installed")
    elif (location := Path(spec.origin).resolve().parent) != (root / "bff").resolve():
        problems.append(f"bff: imported from {location}, not from this checkout")
    for dist in ("team-bff",):
        try:
            metadata.version(canonicalize_name(dist))
        except metadata.PackageNotFoundError:
            problems.append(f"{dist}: not installed (examples/team)")
    return problems


#: the packages whose versions bff's code depends on most (internals read, protocols replaced, typed APIs)
KEY_PACKAGES = (
    "strawberry-graphql",
    "graphql-core",
    "fastapi",
    "starlette",
    "uvicorn",
    "redis",
    "httpx",
    "aiohttp",
    "authlib",
    "joserfc",
    "pydantic",
    "pydantic-settings",
    "cryptography",
    "websockets",
    "mypy",
    "ruff",
    "pytest",
    "pytest-asyncio",
)


def pins(lock: Path) -> dict[str, str]:
    """The lock's `name==version` lines, by canonical name."""
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if "==" in text and not text.startswith("-"):
            name, version = text.split("==", 1)
            found[canonicalize_name(name.split("[", 1)[0].strip())] = version.split(";", 1)[0].strip()
    return found


def versions(lock: Path, names: tuple[str, ...] = KEY_PACKAGES) -> list[str]:
    """One line per package: the installed version, and the lock's pin when it differs."""
    pinned = pins(lock)
    lines: list[str] = []
    for name in names:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = "missing"
        pin = pinned.get(canonicalize_name(name), "not pinned")
        note = "= lock" if pin == installed else f"(lock: {pin})"
        lines.append(f"{name:<20} {installed:<12} {note}")
    return lines


def main() -> int:
    if sys.argv[1:2] == ["--versions"]:
        print(f"resolved versions ({sys.executable}):")
        for line in versions(Path(sys.argv[2])):
            print(f"  {line}")
        return 0
    lock = Path(sys.argv[1])
    problems = differences(lock, Path(__file__).resolve().parent.parent)
    for problem in problems:
        print(f"lockcheck: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
