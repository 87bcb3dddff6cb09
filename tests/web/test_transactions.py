"""Login transactions in cookies: binding, tampering, expiry, the in-flight cap and cookie size."""

from __future__ import annotations

import time
from http.cookies import SimpleCookie

import pytest

from bff.errors import LoginError
from bff.sessions.cookies import CookiePolicy
from bff.sessions.crypto import SessionCrypto
from bff.web.transactions import MAX_IN_FLIGHT, MAX_TOTAL_BYTES, LoginTransactions, Transaction

POLICY = CookiePolicy(name="__Host-bff_login", secure=True, samesite="lax", max_age=600)


def _transactions(*secrets: str) -> LoginTransactions:
    return LoginTransactions(SessionCrypto(list(secrets or ["secret-one-0123456789"])), POLICY, timeout=600)


def _tx(state: str, created_at: float | None = None, return_to: str = "/", **native: str) -> Transaction:
    return Transaction(
        state=state,
        verifier="v" * 64,
        nonce="n" * 43,
        return_to=return_to,
        created_at=time.time() if created_at is None else created_at,
        native=native or None,
    )


def _jar(headers: list[str], jar: dict[str, str] | None = None) -> dict[str, str]:
    """Apply Set-Cookie headers to a browser's cookie jar (Max-Age=0 removes)."""
    jar = dict(jar or {})
    for header in headers:
        cookie = SimpleCookie()
        cookie.load(header)
        for name, morsel in cookie.items():
            if morsel["max-age"] == "0":
                jar.pop(name, None)
            else:
                jar[name] = morsel.value
    return jar


def test_each_transaction_has_its_own_cookie_and_is_found_by_its_state() -> None:
    transactions = _transactions()
    jar: dict[str, str] = {}
    for state in ("state-a", "state-b", "state-c"):
        jar = _jar(transactions.begin(_tx(state, return_to=f"/{state}"), jar), jar)
    assert len(jar) == 3
    assert all(name.startswith("__Host-bff_login_") for name in jar)
    for state in ("state-c", "state-a", "state-b"):  # any order
        found = transactions.find(state, jar)
        assert found is not None and found.return_to == f"/{state}"
    header = transactions.clear("state-a")
    assert header.startswith(transactions.cookie_name("state-a") + "=;") and "Max-Age=0" in header
    assert "Secure" in header and "SameSite=Lax" in header and "HttpOnly" in header


def test_unknown_forged_moved_or_foreign_cookies_are_no_transaction() -> None:
    transactions = _transactions()
    jar = _jar(transactions.begin(_tx("mine"), {}))
    name, value = next(iter(jar.items()))
    assert transactions.find("unknown", jar) is None
    # the value moved under another state's cookie name does not open (the name is authenticated)
    assert transactions.find("other", {transactions.cookie_name("other"): value}) is None
    # tampered
    flipped = value[:-2] + ("A" if value[-2] != "A" else "B") + value[-1]
    assert transactions.find("mine", {name: flipped}) is None
    for garbage in ("", "x", "!!!", "a" * 5000):
        assert transactions.find("mine", {name: garbage}) is None
    # sealed by another deployment's secret
    assert _transactions("another-secret-0123456789").find("mine", jar) is None


def test_previous_secrets_still_open_transactions() -> None:
    old = _transactions("old-secret-0123456789")
    jar = _jar(old.begin(_tx("s"), {}))
    rotated = _transactions("new-secret-0123456789", "old-secret-0123456789")
    assert rotated.find("s", jar) is not None


def test_expiry_is_checked_on_the_server() -> None:
    transactions = _transactions()
    now = time.time()
    assert not transactions.expired(_tx("s", now - 599), now)
    assert transactions.expired(_tx("s", now - 601), now)
    assert transactions.expired(_tx("s", now + 3600), now)  # from the future: not ours to trust
    assert 500 < transactions.remaining(_tx("s", now - 60)) <= 540


def test_in_flight_cap_drops_the_oldest_and_garbage() -> None:
    transactions = _transactions()
    now = time.time()
    jar: dict[str, str] = {"__Host-bff_login_deadbeefdeadbeef": "garbage", "unrelated": "kept"}
    for i in range(MAX_IN_FLIGHT + 3):
        jar = _jar(transactions.begin(_tx(f"s{i}", now + i), jar), jar)
    logins = [name for name in jar if name.startswith(transactions.prefix)]
    assert len(logins) == MAX_IN_FLIGHT
    assert jar["unrelated"] == "kept"
    kept = {f"s{i}" for i in range(MAX_IN_FLIGHT + 3) if transactions.find(f"s{i}", jar) is not None}
    assert kept == {f"s{i}" for i in range(3, MAX_IN_FLIGHT + 3)}  # the newest ones
    # an expired one is cleared at the next start
    stale = _jar(transactions.begin(_tx("stale", now - 3600), {}))
    headers = transactions.begin(_tx("fresh", now), stale)
    assert _jar(headers, stale).keys() == {transactions.cookie_name("fresh")}


def test_cookies_stay_small() -> None:
    transactions = _transactions()
    browser = transactions.begin(_tx("s" * 43, return_to="/" + "p" * 1023), {})[-1]
    assert len(browser.split(";")[0]) < 1800
    typical = transactions.begin(_tx("s" * 43, return_to="/orders?x=1"), {})[-1]
    assert len(typical.split(";")[0]) < 450
    native = transactions.begin(
        _tx("s" * 43, redirect_uri="com.example.app:/oauth/cb", challenge="c" * 43, app_state="a" * 512), {}
    )[-1]
    assert len(native.split(";")[0]) < 1300
    with pytest.raises(LoginError):
        transactions.begin(_tx("s", redirect_uri="x" * 2048, challenge="c" * 43, app_state="a" * 512), {})


def test_in_flight_bytes_are_capped_too() -> None:
    transactions = _transactions()
    now = time.time()
    jar: dict[str, str] = {}
    for i in range(MAX_IN_FLIGHT):
        jar = _jar(transactions.begin(_tx(f"s{i}", now + i, return_to="/" + "p" * 1000), jar), jar)
    header = "; ".join(f"{name}={value}" for name, value in jar.items())
    assert len(header) <= MAX_TOTAL_BYTES
    assert 1 < len(jar) < MAX_IN_FLIGHT
    assert transactions.find(f"s{MAX_IN_FLIGHT - 1}", jar) is not None  # the newest is always kept
