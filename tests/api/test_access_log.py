"""The access log: one JSON line per request (method, path, route template, status, duration,
caller), handed to logging in batches by the request pipeline."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest

from api.middleware import ACCESS_LOG_KEY
from core.logs import JsonFormatter
from tests.api.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="session")


class _Writes(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("api"))
        self.writes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.writes.append(self.format(record))


async def test_every_request_gets_one_line_written_in_batches(world: World) -> None:
    """Answers of every kind (200, 404, 401, 400, 405) are each logged once with their
    caller, and concurrent requests share one write."""
    logger = logging.getLogger("api.access")
    writes = _Writes()
    logger.addHandler(writes)
    level = logger.level
    logger.setLevel(logging.INFO)  # as `fleet api` runs (the tests' root is at WARNING)
    access = world.client.app[ACCESS_LOG_KEY]
    access.flush()
    writes.writes.clear()
    try:
        headers = world.auth(world.a.tokens["admin"])
        missing = uuid.uuid4()
        requests = [
            ("GET", "/api/vehicles?limit=5", headers, 200),
            ("GET", f"/api/vehicles/{missing}", headers, 404),
            ("GET", "/api/vehicles", {}, 401),
            ("GET", "/api/vehicles?limit=%00", headers, 400),
            ("DELETE", "/api/openapi.json", headers, 405),
        ]
        answers = await asyncio.gather(*(world.client.request(method, path, headers=h)
                                         for method, path, h, _ in requests))
        assert [a.status for a in answers] == [want for *_, want in requests]
        access.flush()
    finally:
        logger.removeHandler(writes)
        logger.setLevel(level)
    assert len(writes.writes) == 1
    lines = [json.loads(line) for line in writes.writes[0].split("\n")]
    by_status = {line["status"]: line for line in lines}
    assert sorted(by_status) == [200, 400, 401, 404, 405]
    ok = by_status[200]
    assert (ok["method"], ok["path"], ok["route"], ok["message"], ok["logger"]) == (
        "GET", "/api/vehicles", "/api/vehicles", "request", "api.access")
    assert ok["user_id"] == str(world.a.user_ids["admin"])
    assert ok["tenant_id"] == str(world.a.id)
    assert ok["duration_ms"] >= 0
    assert by_status[404]["route"] == "/api/vehicles/{id}"
    assert by_status[401]["user_id"] is None
    assert by_status[405]["method"] == "DELETE"
