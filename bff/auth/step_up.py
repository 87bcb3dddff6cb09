"""Step-up authentication (RFC 9470): what a sign-in may ask of the IdP, and whether it got it.

One vocabulary for every layer that meets a step-up (standard library and `bff.errors` only):

- ``/auth/login`` takes ``prompt``, ``acr_values``, ``max_age`` and ``login_hint``, validated here
  (`SignInOptions.parse`: a clear `LoginError` for a bad value);
- the callback checks the ID token against what was asked (`unmet`) and keeps ``acr``, ``amr`` and
  ``auth_time`` in the session's claims (`kept_claims`);
- the upstream clients read an upstream's ``WWW-Authenticate: Bearer
  error="insufficient_user_authentication"`` challenge (`step_up_challenge`);
- the GraphQL layer turns it into the ready ``/auth/login?...`` URL of ``STEP_UP_REQUIRED``
  (`login_url`, with the return path taken from the request's ``Referer``: `referer_return_to`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from bff.errors import LoginError

#: the ``prompt`` values `/auth/login` passes on (OIDC Core 3.1.2.1); ``none`` stands alone
PROMPTS = ("login", "consent", "select_account", "none")
#: ``acr_values``: at most this many space-separated values, this long together
MAX_ACR_VALUES = 8
MAX_ACR_VALUES_LENGTH = 512
#: one Authentication Context Class Reference: URN/URI-ish characters, nothing that needs quoting
#: in a header's quoted string or that could break out of an HTML attribute
_ACR = re.compile(r"[A-Za-z0-9._~:/#@+=%-]{1,256}")
MAX_LOGIN_HINT = 256
#: ``max_age`` is a number of seconds; a bigger one than this (68 years) is a mistake, not a policy
MAX_MAX_AGE = 2**31 - 1
#: clock skew allowed between the IdP's ``auth_time`` and our clock when ``max_age`` was asked
AUTH_TIME_LEEWAY = 30.0
#: longer ``return_to`` values fall back to "/": the transaction cookie must stay small
MAX_RETURN_TO = 1024
_MAX_REFERER = 4096


def safe_return_to(value: str | None, allowed_origins: Sequence[str] = ()) -> str:
    """A same-origin relative path, or an absolute http(s) URL on one of ``allowed_origins``
    (``BFF_LOGIN_RETURN_ORIGINS``: an SPA on its own dev origin); anything else (other hosts,
    schemes, ``//host``, backslashes, control characters, encoded tricks, userinfo) falls back to ``/``."""
    if not value or len(value) > MAX_RETURN_TO:
        return "/"
    decoded = unquote(value)
    if allowed_origins and not value.startswith("/"):
        parts = urlsplit(value)
        clean = not any(ord(ch) < 0x21 or ord(ch) == 0x7F or ch == "\\" for ch in decoded)
        if clean and parts.scheme in ("http", "https") and parts.netloc and "@" not in parts.netloc:
            origin = f"{parts.scheme}://{parts.netloc}".lower()
            if origin in {o.rstrip("/").lower() for o in allowed_origins}:
                return value
        return "/"
    if not value.startswith("/") or value.startswith("//") or decoded.startswith("//"):
        return "/"
    if "\\" in decoded or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    return value


def acr_values_or_none(value: str | None) -> str | None:
    """``value`` as space-separated ACR values (duplicates dropped, order kept), None when empty;
    raises `ValueError` when a value has characters outside the safe set, or there are too many."""
    if value is None or not value.strip(" "):
        return None
    if len(value) > MAX_ACR_VALUES_LENGTH:
        raise ValueError(f"at most {MAX_ACR_VALUES_LENGTH} characters")
    values = list(dict.fromkeys(part for part in value.split(" ") if part))
    if len(values) > MAX_ACR_VALUES:
        raise ValueError(f"at most {MAX_ACR_VALUES} values")
    if not all(_ACR.fullmatch(part) for part in values):
        raise ValueError("letters, digits and . _ ~ : / # @ + = % - only, separated by spaces")
    return " ".join(values)


def max_age_or_none(value: str | None) -> int | None:
    """``value`` as a number of seconds (decimal digits only), None when empty; `ValueError` else."""
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > MAX_MAX_AGE:
        raise ValueError(f"a whole number of seconds from 0 to {MAX_MAX_AGE}")
    return int(value)


@dataclass(frozen=True, slots=True)
class SignInOptions:
    """What a sign-in asks of the IdP beyond the defaults: passed on in the authorization request.
    ``acr_values`` and ``max_age`` are also checked against the ID token at the callback."""

    prompt: str | None = None
    acr_values: str | None = None
    max_age: int | None = None
    login_hint: str | None = None

    @classmethod
    def parse(
        cls,
        *,
        prompt: str | None = None,
        acr_values: str | None = None,
        max_age: str | None = None,
        login_hint: str | None = None,
    ) -> SignInOptions:
        """The options of ``/auth/login``'s query; empty values count as absent. Raises `LoginError`
        with a message that names the parameter and what it accepts."""
        prompts: list[str] = []
        if prompt is not None and prompt.strip(" "):
            prompts = list(dict.fromkeys(part for part in prompt.split(" ") if part))
            if any(part not in PROMPTS for part in prompts):
                raise LoginError(f"prompt must be one or more of {', '.join(PROMPTS)} (space-separated)")
            if "none" in prompts and len(prompts) > 1:
                raise LoginError("prompt=none cannot be combined with other prompt values")
        try:
            acr = acr_values_or_none(acr_values)
        except ValueError as exc:
            raise LoginError(f"acr_values: {exc}") from None
        try:
            age = max_age_or_none(max_age)
        except ValueError as exc:
            raise LoginError(f"max_age must be {exc}") from None
        hint = login_hint if login_hint and login_hint.strip(" ") else None
        if hint is not None and (len(hint) > MAX_LOGIN_HINT or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in hint)):
            raise LoginError(f"login_hint must be at most {MAX_LOGIN_HINT} printable characters")
        return cls(prompt=" ".join(prompts) or None, acr_values=acr, max_age=age, login_hint=hint)


def unmet(claims: Mapping[str, Any], *, acr_values: str | None, max_age: int | None, requested_at: float) -> str | None:
    """Why the ID token ``claims`` do not meet what the sign-in asked (None: they do).

    ``acr_values``: the token's ``acr`` must be one of them (the IdP may answer a weaker one: OIDC
    makes them voluntary). ``max_age``: the token's ``auth_time`` must be there and no older than
    ``max_age`` seconds before the sign-in was asked for (``requested_at``), give or take
    `AUTH_TIME_LEEWAY` of clock skew: time spent at the IdP's pages does not count against it."""
    if acr_values:
        acr = claims.get("acr")
        if not isinstance(acr, str) or acr not in acr_values.split(" "):
            return "The identity provider did not complete the stronger sign-in that was asked for"
    if max_age is not None:
        auth_time = claims.get("auth_time")
        if not isinstance(auth_time, int | float) or isinstance(auth_time, bool):
            return "The identity provider did not say when you signed in, and a recent sign-in was asked for"
        if auth_time + max_age + AUTH_TIME_LEEWAY < requested_at:
            return "The identity provider did not ask you to sign in again, and a recent sign-in was asked for"
    return None


def kept_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The ID token's ``acr``, ``amr`` and ``auth_time``, when present and well-typed: kept in the
    session's claims (`bff.User.acr`, ``amr``, ``auth_time``) until the next sign-in."""
    kept: dict[str, Any] = {}
    acr = claims.get("acr")
    if isinstance(acr, str) and acr:
        kept["acr"] = acr[:256]
    amr = claims.get("amr")
    if isinstance(amr, list) and all(isinstance(method, str) for method in amr):
        kept["amr"] = [method[:64] for method in amr[:16]]
    auth_time = claims.get("auth_time")
    if isinstance(auth_time, int | float) and not isinstance(auth_time, bool):
        kept["auth_time"] = auth_time
    return kept


# -- the way back: STEP_UP_REQUIRED's ready login URL ---------------------------------------------


def referer_return_to(referer: str | None, *, public_origin: str, return_origins: Sequence[str] = ()) -> str:
    """Where the browser should come back to after the step-up: the path (and query) of the page
    that made the request (``Referer``) when that page is on the BFF's own origin, the whole URL
    when it is on one of ``return_origins`` (``BFF_LOGIN_RETURN_ORIGINS``), else ``/``; always
    through `safe_return_to`, exactly as ``/auth/login`` will judge it."""
    if not referer or len(referer) > _MAX_REFERER:
        return "/"
    try:
        parts = urlsplit(referer)
        port = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return "/"
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return "/"
    del port
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if origin == public_origin.rstrip("/").lower():
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return safe_return_to(path)
    if return_origins:
        return safe_return_to(parts._replace(fragment="").geturl(), return_origins)
    return "/"


def login_url(base_url: str, *, acr_values: str | None, max_age: int | None, return_to: str) -> str:
    """``{base_url}/auth/login?acr_values=…&max_age=…&return_to=…``. A challenge that names neither
    asks for a fresh sign-in (``prompt=login``): the IdP would otherwise answer from its own session
    and the upstream would refuse the same token again."""
    params: list[tuple[str, str]] = []
    if acr_values:
        params.append(("acr_values", acr_values))
    if max_age is not None:
        params.append(("max_age", str(max_age)))
    if not acr_values and max_age is None:
        params.append(("prompt", "login"))
    params.append(("return_to", return_to))
    return f"{base_url.rstrip('/')}/auth/login?{urlencode(params, quote_via=quote)}"


# -- an upstream's challenge (RFC 9470 section 3, RFC 9110 section 11.6.1) ------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_QUOTED_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: its scheme (lower case) and its parameters (names lower
    case; a token68 challenge has none)."""

    scheme: str
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """The challenges of one ``WWW-Authenticate`` field value (several, comma-separated, each with
    comma-separated ``name=token`` or ``name="quoted"`` parameters, or a token68). Raises
    `ValueError` when the value does not follow the grammar (a repeated parameter included)."""
    challenges: list[Challenge] = []
    current: Challenge | None = None  # the challenge whose parameters may follow
    at, end = 0, len(header)
    while True:
        at = _skip(header, at, commas=True)
        if at >= end:
            return challenges
        name = _TOKEN.match(header, at)
        if name is None:
            raise ValueError(f"unexpected {header[at]!r} at {at}")
        after = _skip(header, name.end(), commas=False)
        if current is not None and after < end and header[after] == "=":
            key = name.group().lower()
            if key in current.params:
                raise ValueError(f"parameter {key!r} repeated")
            current.params[key], at = _value(header, _skip(header, after + 1, commas=False))
            at = _expect_list_end(header, at)
            continue
        # a new challenge: its scheme, then nothing, parameters, or a token68
        current = Challenge(name.group().lower(), {})
        challenges.append(current)
        if after >= end or header[after] == ",":
            at = after
            continue
        if after == name.end():
            raise ValueError(f"expected a space after the scheme at {after}")
        token68 = _TOKEN68.match(header, after)
        if token68 is not None:
            following = _skip(header, token68.end(), commas=False)
            if following >= end or header[following] == ",":
                at, current = following, None  # ``Basic dXNlcg==``: no parameters may follow
                continue
        at = after  # the first parameter


def _skip(text: str, at: int, *, commas: bool) -> int:
    while at < len(text) and (text[at] in " \t" or (commas and text[at] == ",")):
        at += 1
    return at


def _expect_list_end(text: str, at: int) -> int:
    at = _skip(text, at, commas=False)
    if at < len(text) and text[at] != ",":
        raise ValueError(f"expected ',' at {at}")
    return at


def _value(text: str, at: int) -> tuple[str, int]:
    if at < len(text) and text[at] == '"':
        out: list[str] = []
        at += 1
        while at < len(text):
            ch = text[at]
            if ch == "\\" and at + 1 < len(text):
                out.append(text[at + 1])
                at += 2
            elif ch == '"':
                return "".join(out), at + 1
            else:
                out.append(ch)
                at += 1
            if len(out) > _QUOTED_LIMIT:
                break
        raise ValueError("unterminated quoted string")
    token = _TOKEN.match(text, at)
    if token is None:
        raise ValueError(f"expected a value at {at}")
    return token.group(), token.end()


@dataclass(frozen=True, slots=True)
class StepUp:
    """What an upstream's ``insufficient_user_authentication`` challenge asks for."""

    acr_values: str | None
    max_age: int | None


#: challenge schemes that carry RFC 9470's error (a DPoP-bound token is refused with a DPoP challenge)
_SCHEMES = frozenset({"bearer", "dpop"})


def step_up_challenge(values: Iterable[str]) -> StepUp | None:
    """The step-up an upstream asks for in its ``WWW-Authenticate`` field values (each value may
    hold several challenges), or None: no ``Bearer``/``DPoP`` challenge with ``error=
    "insufficient_user_authentication"``, or one whose ``acr_values``/``max_age`` are malformed (a
    value that cannot be parsed is skipped: garbage is an ordinary refusal, never a step-up)."""
    for value in values:
        try:
            challenges = parse_challenges(value)
        except ValueError:
            continue
        for challenge in challenges:
            params = challenge.params
            if challenge.scheme not in _SCHEMES or params.get("error") != "insufficient_user_authentication":
                continue
            try:
                return StepUp(acr_values_or_none(params.get("acr_values")), max_age_or_none(params.get("max_age")))
            except ValueError:
                return None
    return None
