"""Fixtures of the job tests: Azurite (Azure Blob emulator), a local SMTP sink, and two
tenants with telemetry past the hot window."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from core.ports import free_port as _free_port
from tests.integrations.conftest import seed_fleet
from tests.jobs.archive_rows import OLD_DAYS, insert_telemetry

AZURITE_BIN = (Path(__file__).resolve().parents[2]
               / "api/jobs/azurite/node_modules/.bin/azurite-blob")
# Azurite's documented development account (public, emulator only).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
           "K1SZFPTOtr/KBHBeksoGMGw==")


def azurite_connection_string(port: int) -> str:
    """Connection string of an Azurite blob endpoint on `port`."""
    return (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Azurite blob service on a free port with a temporary directory; yields its
    connection string. Installed by `npm ci --prefix api/jobs/azurite`."""
    if not AZURITE_BIN.exists():
        node = shutil.which("node")
        pytest.fail(f"Azurite is not installed ({AZURITE_BIN} missing; node: {node}); run "
                    "`npm ci --prefix api/jobs/azurite`")
    port = _free_port()
    location = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--location", str(location), "--skipApiVersionCheck", "--loose",
         "--disableTelemetry", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"Azurite did not start: {err[-2000:]}")
            time.sleep(0.1)
    try:
        yield azurite_connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@dataclass
class SmtpSink:
    """Messages received by the local SMTP server."""

    host: str
    port: int
    messages: list[Message] = field(default_factory=list)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """An aiosmtpd server on a free port collecting every message."""
    sink = SmtpSink("127.0.0.1", _free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            sink.messages.append(message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def two_tenants(database: Any) -> tuple[Any, Any]:
    """Tenant a (vehicles v1, v2) and b (w1), each vehicle with 12 samples on each of
    OLD_DAYS and yesterday."""
    a = seed_fleet(database.owner_url, f"a{uuid.uuid4().hex[:8]}", {"v1": {}, "v2": {}})
    b = seed_fleet(database.owner_url, f"b{uuid.uuid4().hex[:8]}", {"w1": {}})
    seq = 0
    for fleet in (a, b):
        for vid in fleet.vehicles.values():
            for offset in (*OLD_DAYS, 1):
                insert_telemetry(database.owner_url, fleet.tenant_id, vid, day_offset=offset,
                                 n=12, seq0=seq)
                seq += 100
    return a, b
