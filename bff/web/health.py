"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bff.auth.oidc import OIDCClient
from bff.errors import BFFError
from bff.resources import Resources
from bff.tasks import shared_task
from bff.web.responses import NO_STORE

router = APIRouter(tags=["health"])

#: how long one look at the IdP's discovery answers /readyz (issue 24)
DISCOVERY_CHECK_SECONDS = 5.0


class DiscoveryCheck:
    """Whether the IdP's discovery answers, looked at no more than once per ``ttl`` seconds
    whatever the number of /readyz calls (concurrent calls share one look): a probe, or anyone,
    calling /readyz in a loop is not a fetch per call at the IdP. An outage is kept as long as
    a success, so a flood during one does not pile up calls that each wait for a timeout."""

    def __init__(self, ttl: float = DISCOVERY_CHECK_SECONDS) -> None:
        self.ttl = ttl
        self.looks = 0
        self._until = 0.0
        self._reason: str | None = None
        self._pending: asyncio.Task[str | None] | None = None

    async def reason(self, oidc: OIDCClient) -> str | None:
        """Why discovery fails (None: it answered), at most ``ttl`` seconds old."""
        if time.monotonic() < self._until:
            return self._reason
        if self._pending is None or self._pending.done():
            self._pending = shared_task(self._look(oidc))
        return await asyncio.shield(self._pending)

    async def _look(self, oidc: OIDCClient) -> str | None:
        self.looks += 1
        try:
            await oidc.metadata(fresh=True)
            reason = None
        except BFFError as exc:
            reason = str(exc)
        self._reason, self._until = reason, time.monotonic() + self.ttl
        return reason


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """503 with the reasons while sign-in is not configured, or the session store or the IdP's
    discovery is unreachable (the IdP named by its issuer URL; looked at every few seconds at most)."""
    resources: Resources = request.state.resources
    reasons: list[str] = []
    if resources.oidc is None:
        reasons.append("sign-in is not configured: set BFF_OIDC_ISSUER, BFF_OIDC_CLIENT_ID and BFF_OIDC_CLIENT_SECRET")
    try:
        await resources.store.ping()
    except BFFError as exc:
        reasons.append(str(exc))
    if resources.oidc is not None:
        check: DiscoveryCheck | None = getattr(request.state, "discovery", None)
        if check is None:  # an app without bff's lifespan: look every time
            check = DiscoveryCheck(ttl=0)
        reason = await check.reason(resources.oidc)
        if reason is not None:
            reasons.append(reason)
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus metrics; with ``BFF_METRICS_TOKEN`` only for ``Authorization: Bearer <token>``."""
    resources: Resources = request.state.resources
    token = resources.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        expected = token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
            return JSONResponse(
                {"error": "unauthorized", "message": "/metrics needs Authorization: Bearer <BFF_METRICS_TOKEN>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"', **NO_STORE},
            )
    return Response(generate_latest(resources.metrics.registry), media_type=CONTENT_TYPE_LATEST)
