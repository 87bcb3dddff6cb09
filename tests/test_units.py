"""Small pure pieces: crypto, refresh policy, return_to, settings parsing, error codes."""

from __future__ import annotations

import pytest

from bff.sessions.crypto import DecryptError, SessionCrypto
from bff.sessions.models import TokenSet
from bff.settings import Settings
from bff.web.auth import safe_return_to


def test_cookie_mac_and_rotation() -> None:
    old = SessionCrypto(["old"])
    new = SessionCrypto(["new", "old"])
    signed = old.sign("abc")
    assert new.unsign(signed) == "abc"
    assert SessionCrypto(["other"]).unsign(signed) is None
    assert new.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None
    for junk in (None, "", "abc", "a.b.c", "x" * 1000):
        assert new.unsign(junk) is None


def test_encryption_binds_to_key_and_id() -> None:
    crypto = SessionCrypto(["k"])
    blob = crypto.encrypt(b"secret tokens", b"id-1")
    assert b"secret" not in blob
    assert crypto.decrypt(blob, b"id-1") == b"secret tokens"
    with pytest.raises(DecryptError):
        crypto.decrypt(blob, b"id-2")
    with pytest.raises(DecryptError):
        SessionCrypto(["other"]).decrypt(blob, b"id-1")


@pytest.mark.parametrize(
    ("lifetime", "left", "expected"),
    [
        (3600, 400, False),  # long token, outside the 300 s buffer
        (3600, 299, True),  # inside the buffer
        (60, 31, False),  # short token: half-life rule, not every request
        (60, 29, True),
        (600, 301, False),  # exactly 2 x buffer: the buffer rule applies
        (600, 300, True),
    ],
)
def test_refresh_policy(lifetime: float, left: float, expected: bool) -> None:
    now = 1_000_000.0
    tokens = TokenSet(access_token="a", issued_at=now - (lifetime - left), expires_at=now + left)
    assert tokens.needs_refresh(now, 300) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/orders?x=1#top", "/orders?x=1#top"),
        ("/", "/"),
        (None, "/"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("/%2Fevil.example", "/"),
        ("/%5Cevil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("relative/path", "/"),
    ],
)
def test_return_to(value: str | None, expected: str) -> None:
    assert safe_return_to(value) == expected
    assert safe_return_to(value, ["http://localhost:5173"]) == expected  # an allow-list changes none of these


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://localhost:5173/", "http://localhost:5173/"),
        ("http://LOCALHOST:5173/app?x=1#y", "http://LOCALHOST:5173/app?x=1#y"),
        ("http://localhost:5174/", "/"),  # another port: another origin
        ("https://localhost:5173/", "/"),  # another scheme
        ("http://localhost:5173@evil.example/", "/"),
        ("http://evil.example/?http://localhost:5173", "/"),
        ("http://localhost:5173/\\evil", "/"),
        ("http://localhost:5173/ok\r\nSet-Cookie: x=1", "/"),
        ("javascript://localhost:5173/%0aalert(1)", "/"),
    ],
)
def test_absolute_return_to_only_on_listed_origins(value: str, expected: str) -> None:
    assert safe_return_to(value, ["http://localhost:5173"]) == expected


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BFF_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("BFF_NATIVE_REDIRECT_URIS", "com.example.app:/cb")
    monkeypatch.setenv("BFF_SESSION_PREVIOUS_SECRETS", "one,two")
    monkeypatch.setenv("BFF_UPSTREAMS__ACCOUNTS__URL", "http://accounts")
    monkeypatch.setenv("BFF_UPSTREAMS__ACCOUNTS__TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("BFF_OIDC_ISSUER", "http://idp/")
    monkeypatch.setenv("BFF_COOKIE_SECURE", "false")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.native_redirect_uris == ["com.example.app:/cb"]
    assert [s.get_secret_value() for s in settings.session_previous_secrets] == ["one", "two"]
    assert settings.upstreams["accounts"].timeout_seconds == 2.5
    assert settings.oidc_issuer == "http://idp"
    assert settings.cookie_name == "bff_session"
    assert Settings(cookie_secure=True).cookie_name == "__Host-bff_session"


def test_production_requires_a_secret() -> None:
    with pytest.raises(ValueError, match="BFF_SESSION_SECRET"):
        Settings(env="production")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://App.example.com/", "https://app.example.com"),
        ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
        ("*", None),
        ("null", None),
        ("https://*.example.com", None),
        ("app.example.com", None),
        ("https://app.example.com/path", None),
        ("ftp://app.example.com", None),
        ("https://user@app.example.com", None),
    ],
)
def test_origin_lists_hold_exact_origins(given: str, expected: str | None) -> None:
    """BFF_CORS_ORIGINS and BFF_LOGIN_RETURN_ORIGINS: a wildcard or null would make CORS reflect any
    Origin with credentials (issue 24); the error names the variable, on one line."""
    from pydantic import ValidationError

    from bff.settings import describe_errors

    if expected is not None:
        assert Settings(cors_origins=given, login_return_origins=given).cors_origins == [expected]
        return
    with pytest.raises(ValidationError) as exc:
        Settings(cors_origins=f"https://ok.example.com,{given}")
    (line,) = describe_errors(exc.value)
    assert line.startswith("BFF_CORS_ORIGINS: ")
    assert "\n" not in line


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        (None, "unknown"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_anonymous_streams_are_counted_per_address_and_ipv6_per_64(host: str | None, key: str) -> None:
    from bff.admission import address_key

    assert address_key(host) == key
