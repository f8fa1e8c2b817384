"""Schemathesis fuzzes the served OpenAPI document against a real running API.

The app runs on a real socket (aiohttp's TestServer) against the real PostgreSQL and Redis;
the fuzzer is the `schemathesis` command line in a subprocess, authenticated as an admin, so
that it reaches the handlers. Every built-in check runs: no server error, and every answer
conforms to the document (status codes, content types, schemas, `Allow` on 405); requests
the document calls valid are accepted and requests it calls invalid are refused.

Two settings, each the document's own words: a schema-valid request may get the 422 every
such operation documents (a rule no schema can state: from < to, a valid geometry, an id
that exists), and strings hold no NUL (refused with a 400, docs/api.md "Parameters").
`/api/live` is a WebSocket, which an HTTP fuzzer cannot speak (tests/api/test_live_socket.py).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.api.conftest import World

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
BUDGET_S = 60
"""Time budget of the whole run (phases repeat until it is spent), s."""
MAX_EXAMPLES = 40
"""Cases per operation and phase: enough for the coverage phase's boundary values."""
SEED = 13
"""Fixed, so that a failure reproduces; change it to explore."""


CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
"""


async def _fuzz(world: World, report_dir: Path) -> tuple[int, str]:
    url = str(world.client.make_url("/api/openapi.json"))
    token = world.a.tokens["admin"]
    config = report_dir / "schemathesis.toml"
    config.write_text(CONFIG)
    proc = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS), "--config-file", str(config), "run", url,
        "--checks", "all", "--exclude-path", "/api/live",
        "--max-time", str(BUDGET_S), "--max-examples", str(MAX_EXAMPLES),
        # One worker: hypothesis's lambda descriptions are not thread-safe (an internal
        # AssertionError in get_pretty_function_description was seen with two).
        "--seed", str(SEED), "--workers", "1",
        "--header", f"Authorization: Bearer {token}",
        # PostgreSQL text cannot hold NUL; the document says every string refuses it.
        "--generation-allow-x00", "false",
        "--generation-database", "none",
        "--no-color", "--output-truncate", "false",
        # Its replay cache goes to the working directory: keep it out of the checkout.
        cwd=report_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=BUDGET_S + 60)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_schemathesis_finds_no_server_error_and_no_nonconformance(
        world: World, tmp_path: Path) -> None:
    """0 server errors, 0 non-conformance within the budget."""
    code, output = await _fuzz(world, tmp_path)
    assert code == 0, output[-20000:]
