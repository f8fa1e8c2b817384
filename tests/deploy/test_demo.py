"""`fleet demo` as a user runs it: seeded tenant, live API, data from the real gateway and from
the load generator, a clean stop, and a second run that reuses what the first one made.

The demo runs against a throwaway database (environment overrides), from a scratch folder so
its state files do not touch the checkout's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.ports import free_port
from deploy.services import LocalServices
from tests.conftest import TestDatabase

pytestmark = pytest.mark.services


def demo_env(services: LocalServices, database: TestDatabase) -> dict[str, str]:
    # Keep FLEET_SERVICES_* (where the stack runs); replace the connection settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FLEET_") or k.startswith("FLEET_SERVICES_")}
    env.update({
        "FLEET_SERVICES_STATE_DIR": str(services.project_state),
        "FLEET_DATABASE_URL": database.app_url,
        "FLEET_DATABASE_OWNER_URL": database.owner_url,
        "FLEET_DATABASE_INGEST_URL": database.ingest_url,
        "FLEET_DATABASE_ADMIN_URL": database.admin_url,
        "FLEET_MQTT_URL": services.mqtt_url(),
        # A Redis database of its own, as a separate deployment would have: the other API
        # tests' rate-limit counters for 127.0.0.1 must not throttle the demo's login.
        "FLEET_REDIS_URL": services.redis_url().rsplit("/", 1)[0] + "/3",
        "FLEET_API_TILES_URL": "",
    })
    return env


def call(url: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,  # noqa: S310
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 (our own localhost)
        return json.loads(resp.read())


def wait_for_banner(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, str]:
    """Read the demo's output until it prints the login details."""
    assert proc.stdout is not None
    seen: list[str] = []
    fields: dict[str, str] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and "password" not in fields:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.match(r"\s+(dispatcher map|log in as|password):\s+(\S+)", line)
        if match:
            fields[match[1]] = match[2]
    assert "password" in fields, "".join(seen)
    return fields


def telemetry_by_source(database: TestDatabase, tenant: str) -> dict[str, int]:
    with psycopg.connect(database.owner_url) as conn:
        rows = conn.execute(
            "SELECT t.source, count(DISTINCT t.vehicle_id) FROM telemetry t "
            "JOIN tenants n ON n.id = t.tenant_id WHERE n.slug = %s GROUP BY 1",
            (tenant,)).fetchall()
    return {str(source): int(str(n)) for source, n in rows}


def test_demo_runs_end_to_end_and_again(services: LocalServices, database: TestDatabase,
                                        tmp_path: Path, tenant_slug: str) -> None:
    port = free_port()
    # A tenant of its own: the demo's broker sessions and topics never meet a real demo's.
    argv = [sys.executable, "-m", "deploy.cli", "demo", "--tenant", tenant_slug, "--vehicles", "6",
            "--gateway-vehicles", "1", "--port", str(port), "--duration-s", "60"]
    env = demo_env(services, database)
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        banner = wait_for_banner(proc, timeout_s=120)
        assert banner["dispatcher map"] == f"http://127.0.0.1:{port}/"
        login = call(f"http://127.0.0.1:{port}/api/auth/login",
                     {"email": banner["log in as"], "password": banner["password"]})
        vehicles = call(f"http://127.0.0.1:{port}/api/vehicles?limit=100",
                        token=login["access_token"])
        assert vehicles["total"] == 6
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        with page:
            assert b'src="/static/app/console.js"' in page.read()
        bundle = urllib.request.urlopen(f"http://127.0.0.1:{port}/static/app/console.js",
                                        timeout=10)
        with bundle:
            assert bundle.status == 200
        # Data from both paths: the real gateway (van-001) and the load generator (the rest).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            sources = telemetry_by_source(database, tenant_slug)
            if sources.get("gateway") == 1 and sources.get("simulator") == 5:
                break
            time.sleep(2)
        assert sources.get("gateway") == 1, sources
        assert sources.get("simulator") == 5, sources
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    assert proc.returncode == 0, out
    assert "demo: stopped" in out
    logs = tmp_path / ".fleet" / "demo" / "logs"
    assert {p.name for p in logs.iterdir()} >= {"stream.log", "api.log", "load.log",
                                                 "sim-van-001.log", "gateway-van-001.log"}

    # Again: same tenant and credentials, no second copy of anything.
    again = subprocess.run([*argv[:-1], "5"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=180, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert banner["password"] in again.stdout
    with psycopg.connect(database.owner_url) as conn:
        counts = conn.execute("SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM "
                              "vehicles), (SELECT count(*) FROM users)").fetchone()
    assert counts == (1, 6, 1)
