"""Small helpers shared by the /auth/* routes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.responses import JSONResponse

NO_STORE = {"Cache-Control": "no-store"}


def error_response(status: int, error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status_code=status, headers=NO_STORE)


def iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
