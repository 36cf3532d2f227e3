"""Operations: health, what the server offers, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from facecall import __version__
from facecall.api.auth import metrics_reader
from facecall.api.schemas import Health, Readiness, ServerInfo
from facecall.logs import get_logger

router = APIRouter(tags=["ops"])
log = get_logger(__name__)

READY_WAIT = 2.0  # seconds the database has to answer /readyz


@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Liveness: the process serves requests (``HEAD`` too, for checkers that use it)."""
    return Health(status="ok", version=__version__)


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> Response:
    """Readiness: the database answers a trivial read within 2 s (503 otherwise; the node
    itself may be fine -- ``/healthz`` -- but sign-in, calls and history would fail)."""
    try:
        await asyncio.wait_for(request.app.state.store.ping(), READY_WAIT)
    except Exception as exc:  # whatever the driver raises: the answer is "not ready"
        log.warning("ops.not_ready", error=type(exc).__name__)
        detail = "the database does not answer" if isinstance(exc, TimeoutError) \
            else f"the database fails ({type(exc).__name__})"
        body = Readiness(status="unavailable", version=__version__, detail=detail)
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Readiness(status="ok", version=__version__).model_dump())


@router.get("/v1/server", response_model=ServerInfo)
async def server_info(request: Request) -> ServerInfo:
    """The server's version and whether anyone may sign up (no token needed)."""
    return ServerInfo(version=__version__, sign_up=request.app.state.settings.sign_up)


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
async def metrics() -> Response:
    """Prometheus text exposition of the process-wide registry (``metrics_token``: see
    :func:`~facecall.api.auth.metrics_reader`)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
