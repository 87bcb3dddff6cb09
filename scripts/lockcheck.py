"""Exit 0 when this Python has exactly what a lock file pins (and bff installed from this checkout),
else print what differs and exit 1. `scripts/test` runs it before anything else and installs the lock
when it fails, so the README's test command and CI always test the same dependency set (issue 22).
A check, not a `pip install -r` on every run: pip takes ~10 s to find that nothing needs doing."""

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


def main() -> int:
    lock = Path(sys.argv[1])
    problems = differences(lock, Path(__file__).resolve().parent.parent)
    for problem in problems:
        print(f"lockcheck: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
