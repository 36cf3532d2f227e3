"""Operations: health, what the server offers, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from facecall import __version__
from facecall.api.auth import metrics_reader
from facecall.api.schemas import Health, ServerInfo

router = APIRouter(tags=["ops"])


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process serves requests (``HEAD`` too, for checkers that use it)."""
    return Health(status="ok", version=__version__)


@router.get("/v1/server", response_model=ServerInfo)
async def server_info(request: Request) -> ServerInfo:
    """The server's version and whether anyone may sign up (no token needed)."""
    return ServerInfo(version=__version__, sign_up=request.app.state.settings.sign_up)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
async def metrics() -> Response:
    """Prometheus text exposition of the process-wide registry (``metrics_token``: see
    :func:`~facecall.api.auth.metrics_reader`)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
