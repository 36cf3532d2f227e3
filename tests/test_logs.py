"""Log output (facecall.logs): tracebacks are logged, the local variables of their frames
(request bodies, passwords) are not."""

from __future__ import annotations

import json
import logging

import pytest

from facecall.logs import configure_logging, get_logger

SECRET = "Plaintext-Secret-42"


def _fail_with_a_secret_in_scope() -> None:
    password = SECRET  # what a route's request body holds when the database fails under it
    raise RuntimeError(f"database is down ({len(password)})")


@pytest.fixture
def restore_logging() -> object:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("through", ["structlog", "stdlib"])
def test_a_logged_exception_has_its_traceback_and_no_local_variables(
    capsys: pytest.CaptureFixture[str], restore_logging: object, as_json: bool, through: str
) -> None:
    configure_logging("info", json=as_json)
    try:
        _fail_with_a_secret_in_scope()
    except RuntimeError:
        if through == "structlog":
            get_logger("facecall.test").exception("request.failed")
        else:  # uvicorn and FastAPI log through the standard library
            logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    err = capsys.readouterr().err
    assert SECRET not in err
    assert "_fail_with_a_secret_in_scope" in err and "RuntimeError: database is down" in err
    if as_json:
        (line,) = err.strip().splitlines()
        record = json.loads(line)
        assert "Traceback (most recent call last)" in record["exception"]
        assert "exc_info" not in record
