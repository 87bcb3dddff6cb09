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


def test_settings_errors_name_the_variables_without_a_traceback() -> None:
    cases = {
        "BFF_MAX_DEPTH": ("0", "BFF_MAX_DEPTH: Input should be greater than 0"),
        "BFF_SESSION_STORE": ("postgres://db", "BFF_SESSION_STORE: expected memory, redis://"),
        "BFF_OIDC_ISSUER": ("idp.example", "BFF_OIDC_ISSUER: the issuer must be an absolute http(s) URL"),
    }
    for name, (value, expected) in cases.items():
        result = _run("serve", "--port", "1", **{name: value})
        assert result.returncode == 2
        assert expected in result.stderr
        assert "Traceback" not in result.stderr and "pydantic" not in result.stderr
    # a password in a store URL is never echoed
    result = _run("serve", "--port", "1", BFF_SESSION_STORE="redis://:hunter2@db:99999/0")
    assert result.returncode == 2
    assert "hunter2" not in result.stderr


def test_check_prints_masked_configuration_and_fails_on_unreachable_parts() -> None:
    result = _run(
        "check",
        "--timeout",
        "2",
        BFF_SESSION_STORE="redis://:hunter2@127.0.0.1:1/0",
        BFF_OIDC_ISSUER="http://127.0.0.1:1",
        BFF_OIDC_CLIENT_ID="bff",
        BFF_OIDC_CLIENT_SECRET="top-secret-value",
    )
    assert result.returncode == 1
    assert "hunter2" not in result.stdout and "top-secret-value" not in result.stdout
    assert 'BFF_OIDC_CLIENT_SECRET = "**********"' in result.stdout
    assert "[FAIL] session store: redis://***@127.0.0.1:1/0" in result.stdout
    assert "[FAIL] identity provider: http://127.0.0.1:1" in result.stdout


def test_check_passes_on_the_embedded_defaults_except_sign_in() -> None:
    result = _run("check", "--timeout", "2")
    assert 'BFF_SCHEMA = "bff.demo.api:schema"' in result.stdout
    assert (
        "[ok] schema: bff.demo.api:schema: query, mutation, subscription; max depth 12, cost 5000; introspection on"
        in result.stdout
    )
    assert "[ok] session store: memory reachable" in result.stdout
    assert "[FAIL] identity provider: not configured: set BFF_OIDC_ISSUER and BFF_OIDC_CLIENT_ID" in result.stdout
    assert result.returncode == 1


def test_check_names_a_schema_it_cannot_serve() -> None:
    result = _run("check", "--timeout", "2", BFF_SCHEMA="bff.demo.api.types:Query", BFF_ENV="development")
    assert result.returncode == 1
    assert "[FAIL] schema: schema reference 'bff.demo.api.types:Query' names the class Query" in result.stdout


def test_a_misspelt_variable_is_named_not_silently_ignored() -> None:
    from bff.settings import unknown_variables

    assert unknown_variables(
        {
            "BFF_SCHEMA": "x:y",
            "BFF_SESSION_STORE": "memory",
            "BFF_UPSTREAMS__ACCOUNTS__URL": "http://a",
            "bff_upstreams__accounts__resource": "http://a",
            "BFF_TEST_CHROMIUM": "/usr/bin/chromium",
            "PATH": "/bin",
            "BFF_SESION_STORE": "redis://x",
            "BFF_UPSTREAMS__ACCOUNTS__TIMEOUT": "3",
            "BFF_UPSTREAMS__ACCOUNTS": "x",
        }
    ) == ["BFF_SESION_STORE", "BFF_UPSTREAMS__ACCOUNTS", "BFF_UPSTREAMS__ACCOUNTS__TIMEOUT"]
    result = _run("check", "--timeout", "1", BFF_SESION_STORE="redis://127.0.0.1:1")
    assert result.returncode == 1
    assert "[FAIL] variables:" in result.stdout
    assert "BFF_SESION_STORE" in result.stdout


def test_a_misspelt_variable_gets_a_did_you_mean() -> None:
    from bff.settings import suggest_variable, unknown_variable_message

    assert suggest_variable("BFF_SESION_STORE") == "BFF_SESSION_STORE"
    assert suggest_variable("bff_oidc_client_secrt") == "BFF_OIDC_CLIENT_SECRET"
    assert suggest_variable("BFF_OIDC__ISSUER") == "BFF_OIDC_ISSUER"
    assert suggest_variable("BFF_CORS_ORIGIN") == "BFF_CORS_ORIGINS"
    # an upstream's field is corrected, its name kept
    assert suggest_variable("BFF_UPSTREAMS__ACCOUNTS__TIMEOUT") == "BFF_UPSTREAMS__ACCOUNTS__TIMEOUT_SECONDS"
    assert suggest_variable("BFF_UPSTREAMS__BILLING__URLL") == "BFF_UPSTREAMS__BILLING__URL"
    assert suggest_variable("BFF_UPSTREAM__BILLING__MAX_CONECTIONS") == "BFF_UPSTREAMS__BILLING__MAX_CONNECTIONS"
    assert suggest_variable("BFF_UPSTREAMS__ACCOUNTS") == "BFF_UPSTREAMS__ACCOUNTS__URL"
    assert suggest_variable("BFF_XYZZY") is None
    assert unknown_variable_message("BFF_XYZZY") == "BFF_XYZZY is not a setting (misspelt?): it configures nothing"
    assert unknown_variable_message("BFF_UPSTREAMS__ACCOUNTS__TIMEOUT").endswith(
        "; did you mean BFF_UPSTREAMS__ACCOUNTS__TIMEOUT_SECONDS?"
    )
    result = _run(
        "check",
        "--timeout",
        "1",
        BFF_UPSTREAMS__ACCOUNTS__URL="http://127.0.0.1:1",
        BFF_UPSTREAMS__ACCOUNTS__TIMEOUT="3",
        BFF_XYZZY="1",
    )
    assert result.returncode == 1
    assert (
        "[FAIL] variables: not settings (misspelt?), they configure nothing: "
        "BFF_UPSTREAMS__ACCOUNTS__TIMEOUT (did you mean BFF_UPSTREAMS__ACCOUNTS__TIMEOUT_SECONDS?), BFF_XYZZY"
    ) in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
