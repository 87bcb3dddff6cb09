"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bff.errors import BFFError
from bff.resources import Resources

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """503 with the reasons while sign-in is not configured, or the session store or the IdP's
    discovery is unreachable (the IdP named by its issuer URL)."""
    resources: Resources = request.state.resources
    reasons: list[str] = []
    if resources.oidc is None:
        reasons.append("sign-in is not configured: set BFF_OIDC_ISSUER, BFF_OIDC_CLIENT_ID and BFF_OIDC_CLIENT_SECRET")
    try:
        await resources.store.ping()
    except BFFError as exc:
        reasons.append(str(exc))
    if resources.oidc is not None:
        try:
            await resources.oidc.metadata(fresh=True)
        except BFFError as exc:
            reasons.append(str(exc))
    if reasons:
        return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    return Response(generate_latest(resources.metrics.registry), media_type=CONTENT_TYPE_LATEST)
