"""The wheel as a user installs it: into a clean virtualenv outside the checkout, from the
profile's hash-checked lock. The server profile migrates a database and serves the dispatcher
map with its Leaflet files; the gateway profile, with no server library at all, reads a GPS and
publishes telemetry to the real broker."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from core.ports import free_port
from deploy.install.check_pi import canonical, pins
from deploy.services import ADMIN_ROLE, LocalServices, drop_database
from tests.conftest import make_database
from tests.edge_gateway.helpers import mqtt_client, nmea

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("bytewax", "aiohttp", "asyncpg", "psycopg", "shapely", "numpy", "redis",
               "pyarrow", "azure")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make dist`'s wheel, built from the checkout as it is."""
    out = tmp_path_factory.mktemp("dist")
    # Stale files under build/, and files an older egg-info manifest still lists (setuptools
    # reads SOURCES.txt back), would otherwise travel into the wheel.
    shutil.rmtree(REPO / "build", ignore_errors=True)
    for manifest in REPO.glob("*.egg-info/SOURCES.txt"):
        manifest.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(REPO)],
                   check=True, timeout=300, capture_output=True)
    (built,) = out.glob("fleet_telemetry-*.whl")
    return built


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no checkout on the path, no virtualenv active."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("FLEET_")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    env.update(extra)
    return env


def install(where: Path, profile: str, wheel: Path) -> Path:
    """A fresh virtualenv holding the profile's lock (hash-checked) and the wheel."""
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps"]
    subprocess.run([*pip, "--require-hashes", "-r", str(REPO / "requirements" / f"{profile}.txt")],
                   check=True, timeout=600, cwd=where, env=clean_env())
    subprocess.run([*pip, str(wheel)], check=True, timeout=120, cwd=where, env=clean_env())
    check = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "check"], cwd=where,
                           env=clean_env(), capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout
    return where / "bin"


def test_the_wheel_carries_every_file_fleet_reads(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    migrations = {p.name for p in (REPO / "storage" / "migrations").glob("*.sql")}
    assert {f"storage/migrations/{m}" for m in migrations} <= names
    # The foundation every part imports (the gateway's install included).
    assert {"core/protocol.py", "core/settings.py", "core/logs.py"} <= names
    assert {"edge_gateway/dbc/j1939.dbc", "edge_gateway/dbc/obd2.dbc", "api/web/index.html",
            "api/web/favicon.svg", "api/web/dist/console.js", "api/web/dist/console.css",
            "api/web/dist/leaflet.LICENSE.txt"} <= names
    # The chunks the bundle loads (Leaflet, shared; the geofence editor, on use).
    assert [n for n in names if n.startswith("api/web/dist/chunks/fences-") and n.endswith(".js")]
    # The stylesheet's images (Leaflet's layer control) travel too.
    assert [n for n in names if n.startswith("api/web/dist/assets/") and n.endswith(".png")]
    # Sources, lint and test tooling stay in the checkout.
    assert not [n for n in names if n.startswith(("api/web/src/", "api/web/node_modules/"))]
    # Set-up scripts and tests stay in the checkout.
    assert not [n for n in names if n.startswith(("tests/", "deploy/install/"))]


@pytest.fixture
def empty_database(services: LocalServices) -> Iterator[str]:
    db = make_database(services, migrated=False)
    yield db.owner_url
    drop_database(services.pg_url(ADMIN_ROLE, "postgres"), db.name)


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (our own localhost)
        return int(resp.status), bytes(resp.read())


def test_server_install_migrates_and_serves_the_map(
        tmp_path: Path, wheel: Path, services: LocalServices, empty_database: str) -> None:
    bin_dir = install(tmp_path / "venv", "server", wheel)
    # No TOML from the checkout: the user's settings come from the environment.
    env = clean_env(FLEET_DATABASE_OWNER_URL=empty_database,
                    FLEET_DATABASE_URL=empty_database.replace("fleet_owner", "fleet_app"))
    migrated = subprocess.run([str(bin_dir / "fleet"), "db", "migrate"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    with psycopg.connect(empty_database) as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    expected = {p.name.split(".")[0] for p in (REPO / "storage" / "migrations").glob("*.sql")}
    assert applied is not None
    assert applied[0] == len(expected)

    port = free_port()
    app_url = services.pg_url("fleet_app", empty_database.rsplit("/", 1)[1])
    api = subprocess.Popen([str(bin_dir / "fleet"), "api", "--port", str(port)], cwd=tmp_path,
                           env={**env, "FLEET_DATABASE_URL": app_url,
                                "FLEET_REDIS_URL": services.redis_url(),
                                "FLEET_MQTT_URL": services.mqtt_url()},
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                status, page = fetch(f"{base}/")
                break
            except OSError:
                assert api.poll() is None, api.stderr.read() if api.stderr else ""
                assert time.monotonic() < deadline, "the API did not answer within 60 s"
                time.sleep(0.3)
        assert status == 200
        assert b'src="/static/app/console.js"' in page
        status, script = fetch(f"{base}/static/app/console.js")
        assert status == 200
        # Leaflet, bundled into a chunk the console imports, and its licence.
        chunks = re.findall(rb"chunks/chunk-[A-Z0-9]+\.js", script)
        assert chunks
        assert any(b'"1.9.4"' in fetch(f"{base}/static/app/{c.decode()}")[1] for c in chunks)
        assert b"BSD 2-Clause License" in fetch(f"{base}/static/app/leaflet.LICENSE.txt")[1]
        assert fetch(f"{base}/static/app/console.css")[0] == 200
        assert fetch(f"{base}/favicon.ico")[1].startswith(b"<svg")
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)


@pytest.fixture(scope="module")
def gateway_bin(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """What a Raspberry Pi installs: the gateway lock and the wheel."""
    return install(tmp_path_factory.mktemp("gateway") / "venv", "gateway", wheel)


def test_the_gateway_install_holds_its_lock_and_no_server_library(gateway_bin: Path) -> None:
    installed = subprocess.run([str(gateway_bin / "python"), "-m", "pip", "list",
                                "--format=json"], capture_output=True, text=True, check=True,
                               env=clean_env())
    names = {canonical(p["name"]) for p in msgspec.json.decode(installed.stdout)}
    assert not [n for n in names for s in SERVER_ONLY if n.startswith(s)], names
    assert names - {"pip", "setuptools", "fleet-telemetry"} == \
        set(pins((REPO / "requirements" / "gateway.txt").read_text()))


async def test_the_gateway_install_reads_a_gps_and_publishes(
        tmp_path: Path, gateway_bin: Path, mqtt_url: str, tenant_slug: str) -> None:
    master, slave = os.openpty()
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ntenant = "{tenant_slug}"\nvehicle = "van-1"\n'
                      f'spool_path = "{tmp_path / "spool.sqlite3"}"\nbatch_interval_s = 0.2\n'
                      f'[mqtt]\nurl = "{mqtt_url}"\n'
                      f'[gps]\nport = "{os.ttyname(slave)}"\n')
    rmc = nmea("GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W")
    async with mqtt_client(mqtt_url) as client:
        await client.subscribe(f"fleet/v1/{tenant_slug}/van-1/telemetry", qos=1)
        gateway = await asyncio.create_subprocess_exec(
            str(gateway_bin / "fleet"), "gateway", "--config", str(config), "--log-level",
            "ERROR", cwd=tmp_path, env=clean_env(), stderr=asyncio.subprocess.PIPE)
        try:
            position = None
            async with asyncio.timeout(60):
                messages = aiter(client.messages)
                while position is None:
                    os.write(master, rmc)
                    try:
                        message = await asyncio.wait_for(anext(messages), 0.2)
                    except TimeoutError:
                        continue
                    body = msgspec.json.decode(bytes(message.payload))  # type: ignore[arg-type]
                    position = next(((s["lat_deg"], s["lon_deg"]) for s in body["samples"]
                                     if s.get("lat_deg") is not None), None)
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(gateway.communicate(), 30)
            os.close(master)
            os.close(slave)
    assert gateway.returncode == 0, errors.decode()
    assert position == (pytest.approx(48.1173, abs=1e-4), pytest.approx(11.516667, abs=1e-4))
