"""The README's configuration table names every setting there is (issue 25): a field added to
`Settings` or `UpstreamSettings` without a row fails here, not on a team reading the README."""

from __future__ import annotations

import re
from pathlib import Path

from bff.settings import Settings, UpstreamSettings

ROOT = Path(__file__).resolve().parent.parent


def _configuration_table() -> set[str]:
    """Every variable named in the first cell of a row of the README's "Configuration" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `BFF_"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`(BFF_[A-Z0-9_<>]+)`", first_cell))
    return names


def _variables() -> set[str]:
    """The environment variable of every setting (`BFF_` + the field's name or alias, upper case);
    the `upstreams` mapping as `BFF_UPSTREAMS__<NAME>__<FIELD>` for each field of an upstream."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        if name == "upstreams":
            names.update(f"BFF_UPSTREAMS__<NAME>__{sub.upper()}" for sub in UpstreamSettings.model_fields)
            continue
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names.add(alias.upper() if alias else f"BFF_{name.upper()}")
    return names


def test_every_setting_is_in_the_configuration_table() -> None:
    table = _configuration_table()
    missing = sorted(_variables() - table)
    assert not missing, f"settings missing from the README's configuration table: {missing}"


def test_the_configuration_table_names_no_setting_that_does_not_exist() -> None:
    unknown = sorted(_configuration_table() - _variables())
    assert not unknown, f"rows of the README's configuration table that configure nothing: {unknown}"


def test_the_table_reader_sees_rows_with_several_names() -> None:
    table = _configuration_table()
    # `BFF_MAX_DEPTH` / `BFF_MAX_TOKENS` / `BFF_MAX_ALIASES` is one row with three settings
    assert {"BFF_MAX_DEPTH", "BFF_MAX_TOKENS", "BFF_MAX_ALIASES", "BFF_SCHEMA"} <= table
    assert "BFF_UPSTREAMS__<NAME>__URL" in table
