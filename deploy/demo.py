"""`fleet demo`: the whole product on one machine with a simulated fleet.

Starts (or reuses) the local services, migrates, seeds a demo tenant (an admin, vehicles,
depots, customer sites, a school zone with a speed limit, a delivery corridor), then runs the
stream, the API and the simulators as child processes: a few vehicles through the real gateway
with the ELM327, SLCAN and NMEA simulators, the rest through the load generator. Ctrl-C stops
every child cleanly (so does SIGTERM); running it again reuses the seeded tenant and the same
credentials.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.stopping import StopSignals

# The simulators' synthetic city (simulators.roads.SyntheticCity defaults): the demo's fences
# are laid out on its street grid so that vehicles actually drive through them.
CITY_LAT_DEG = 48.1372
CITY_LON_DEG = 11.5756
BLOCK_M = 200.0
STATE_DIR = Path(".fleet") / "demo"


def register(parser: argparse.ArgumentParser) -> None:
    """Options of `fleet demo`."""
    parser.add_argument("--vehicles", type=int, default=50,
                        help="vehicles in the demo tenant (default 50)")
    parser.add_argument("--gateway-vehicles", type=int, default=2,
                        help="of those, vehicles driven through the real gateway and the "
                             "ELM327/CAN/GPS simulators (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="API port (default 8080)")
    parser.add_argument("--duration-s", type=float, default=0.0,
                        help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--tenant", default="demo", help="demo tenant slug (default demo)")
    parser.set_defaults(func=run)


def offset(east_m: float, north_m: float) -> tuple[float, float]:
    """(lon, lat) of a point given in metres from the city centre (small distances)."""
    lat = CITY_LAT_DEG + north_m / 111_320.0
    lon = CITY_LON_DEG + east_m / (111_320.0 * math.cos(math.radians(CITY_LAT_DEG)))
    return lon, lat


def rectangle(east_m: float, north_m: float, width_m: float, height_m: float
              ) -> list[tuple[float, float]]:
    """A (lon, lat) ring of a rectangle centred on a point given in metres."""
    w, h = width_m / 2, height_m / 2
    return [offset(east_m + dx, north_m + dy) for dx, dy in ((-w, -h), (w, -h), (w, h), (-w, h))]


def demo_geofences() -> list[dict[str, Any]]:
    """The demo tenant's fences, as GeoJSON Features the API accepts."""
    from deploy.seed import circle, polygon

    fences = [
        polygon("Depot North", rectangle(0, 800, 260, 180), category="depot",
                alert_on_entry=True, alert_on_exit=True, dwell_s=300),
        polygon("Depot South", rectangle(-800, -1200, 220, 160), category="depot",
                alert_on_entry=True, alert_on_exit=True, dwell_s=300),
        polygon("School zone Elm Street", rectangle(400, -400, 420, 240), category="school_zone",
                speed_limit_kph=30, alert_on_entry=True),
    ]
    for k, (east, north) in enumerate([(1200, 400), (-1000, 600), (600, 1400), (-400, -1600),
                                        (1600, -800), (-1800, -200)]):
        lon, lat = offset(east, north)
        fences.append(circle(f"Customer site {k + 1}", lon, lat, 120, category="customer",
                             dwell_s=120))
    start, end = offset(-2400, 0), offset(2400, 0)
    fences.append({
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [list(start), list(end)]},
        "properties": {"name": "Main arterial delivery corridor", "kind": "corridor",
                       "corridor_width_m": 60, "speed_limit_kph": 60, "category": "corridor"},
    })
    return fences


MODELS = [("Ford", "Transit", "diesel"), ("Mercedes-Benz", "Sprinter", "diesel"),
          ("Volkswagen", "Crafter", "diesel"), ("Renault", "Master", "diesel"),
          ("Toyota", "Hiace", "gasoline")]


@dataclass
class DemoTenant:
    """What the seeding produced (or found)."""

    slug: str
    tenant_id: str
    admin_email: str
    admin_password: str
    vehicle_codes: list[str]
    gateway_codes: list[str]
    credentials: dict[str, Any] = field(default_factory=dict)
    """What `.fleet/demo/credentials.json` holds (admin and device passwords)."""


def _credentials_file() -> Path:
    return STATE_DIR / "credentials.json"


def _load_or_make_credentials(tenant: str) -> dict[str, Any]:
    path = _credentials_file()
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("tenant") == tenant:
            return data
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    # IA-5: upper, lower, digit and special character, at least 12 characters.
    data = {"tenant": tenant, "admin_email": f"admin@{tenant}.fleet.example",
            "admin_password": "Fleet-" + secrets.token_hex(4) + "-Demo-26!", "devices": {}}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    return data


def _save_credentials(data: dict[str, Any]) -> None:
    fd = os.open(_credentials_file(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)


async def seed(app_url: str, owner_url: str, tenant: str, vehicles: int,
               gateway_vehicles: int) -> DemoTenant:
    """Create the demo tenant once; later runs top up missing vehicles and reuse the rest."""
    import asyncpg

    from deploy.seed import create_geofence, create_tenant, create_user, create_vehicle

    creds = _load_or_make_credentials(tenant)
    codes = [f"van-{i:03d}" for i in range(1, vehicles + 1)]
    owner = await asyncpg.connect(owner_url)
    app = await asyncpg.connect(app_url)
    try:
        tenant_id = await owner.fetchval("SELECT id FROM tenants WHERE slug = $1", tenant)
        if tenant_id is None:
            tenant_id = await create_tenant(app, tenant, "Demo Logistics")
            await create_user(app, tenant_id, creds["admin_email"], creds["admin_password"],
                              "admin", first_name="Demo", last_name="Admin")
            for feature in demo_geofences():
                await create_geofence(app, tenant_id, feature)
        else:
            # A re-run: unlock the admin in case a previous session locked it out.
            await owner.execute(
                "UPDATE users SET failed_login_attempts = 0, account_locked_until = NULL "
                "WHERE tenant_id = $1 AND lower(email) = lower($2)",
                tenant_id, creds["admin_email"])
        existing = {r["code"] for r in await owner.fetch(
            "SELECT code FROM vehicles WHERE tenant_id = $1", tenant_id)}
        for k, code in enumerate(codes):
            if code in existing:
                continue
            make, model, fuel = MODELS[k % len(MODELS)]
            await create_vehicle(app, tenant_id, code, make=make, model=model, fuel_type=fuel,
                                 year=2019 + k % 6, tank_capacity_l=80.0)
    finally:
        await app.close()
        await owner.close()
    return DemoTenant(tenant, str(tenant_id), creds["admin_email"], creds["admin_password"],
                      codes, codes[:gateway_vehicles], creds)


@dataclass
class Child:
    """One supervised process and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    log: IO[bytes]


class Supervisor:
    """Starts children in their own process groups and stops them all, politely first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        """Start one child with its output in `<log_dir>/<name>.log` (extra `env` on top)."""
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env={**os.environ, **(env or {})})
        child = Child(name, proc, log_path, log)
        self.children.append(child)
        return child

    def exited(self) -> Child | None:
        """The first child that has stopped, if any."""
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child (newest first), then SIGKILL what is left after the timeout."""
        for child in reversed(self.children):
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for child in self.children:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
            child.log.close()


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for error messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class StopRequested(Exception):  # noqa: N818 (not an error: the user asked to stop)
    """SIGTERM/SIGINT arrived while the demo was starting its parts."""


def _check_stop(stop: StopSignals | None) -> None:
    """Raise StopRequested once a stop signal has come."""
    if stop is not None and stop.signum is not None:
        raise StopRequested


def wait_for_line(path: Path, needle: str, child: Child, timeout_s: float,
                  stop: StopSignals | None = None) -> str:
    """Wait until a child's log contains `needle`; returns the matching line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_stop(stop)
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        if child.proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not report {needle!r}:\n{tail(path)}")


def run(args: argparse.Namespace) -> int:
    """Set up, seed, start every part, print how to log in, and run until SIGINT/SIGTERM."""
    import asyncio

    from core.settings import load_settings
    from core.stopping import StopSignals
    from deploy.services import local_services
    from storage.config import DbCommandSettings
    from storage.migrate import migrate

    # A signal is only recorded, and every wait below looks at it: an exception raised at a
    # random point could land between starting a child and recording it, and orphan it. The
    # handlers are installed explicitly for SIGINT too, which a shell leaves ignored in a
    # background job (`fleet demo &`): the demo then ignored `kill -INT` (see core.stopping).
    stop = StopSignals("demo").install(lambda: None)
    services = local_services(args.config, log=lambda m: print(m, file=sys.stderr))
    services.up()
    db = load_settings(DbCommandSettings, args.config).database
    migrate(db.owner_url, log=lambda m: print(m, file=sys.stderr))
    demo = asyncio.run(seed(db.url, db.owner_url, args.tenant, args.vehicles,
                            args.gateway_vehicles))
    print(f"demo: tenant {args.tenant!r} with {len(demo.vehicle_codes)} vehicles", flush=True)

    fleet = [sys.executable, "-m", "deploy.cli"]
    if args.config:
        fleet += ["--config", args.config]
    supervisor = Supervisor(STATE_DIR / "logs")
    reason = ""
    try:
        _check_stop(stop)
        supervisor.start("stream", [*fleet, "stream"], env=_demo_stream_env(args.tenant))
        api = supervisor.start("api", [*fleet, "api", "--port", str(args.port)],
                               env=_demo_api_env(services))
        _start_gateway_vehicles(supervisor, fleet, services, demo, stop)
        load_codes = demo.vehicle_codes[len(demo.gateway_codes):]
        if load_codes and stop.signum is None:
            supervisor.start("load", [
                *fleet, "sim", "fleet", "--tenant", args.tenant, "--mqtt", services.mqtt_url(),
                "--codes", ",".join(load_codes), "--rate-hz", "1"])
        _wait_http(f"http://127.0.0.1:{args.port}/healthz", api, timeout_s=60, stop=stop)
        print(_banner(args.port, demo, supervisor), flush=True)
        started = time.monotonic()
        while stop.signum is None:
            dead = supervisor.exited()
            if dead is not None:
                print(f"demo: {dead.name} stopped (exit {dead.proc.returncode}); its log:\n"
                      f"{tail(dead.log_path)}", file=sys.stderr)
                reason = f"because {dead.name} ended"
                return 1
            if args.duration_s and time.monotonic() - started >= args.duration_s:
                reason = f"after --duration-s {args.duration_s:g}"
                break
            time.sleep(0.2)
    except StopRequested:
        pass
    finally:
        supervisor.stop()
        stop.report(reason=reason)
    return 0


def _demo_stream_env(tenant: str) -> dict[str, str]:
    """Dedicate the demo's stream to the demo tenant, with broker sessions of its own.

    The stream's MQTT sessions are persistent: under the default client ids they would also
    have queued whatever else was published on this broker meanwhile (other tenants, test
    runs), which the demo would first have to work through. Settings the user gave win.
    """
    wanted = {
        "FLEET_SOURCE_TENANT": tenant,
        "FLEET_SOURCE_CLIENT_ID_PREFIX": f"fleet-demo-{tenant}"[:48],
        "FLEET_SOURCE_SHARE_GROUP": f"fleet-demo-{tenant}"[:64],
        "FLEET_SOURCE_SESSION_EXPIRY_S": "3600",
        "FLEET_STREAM_RECOVERY_DIR": str(STATE_DIR / "stream-recovery"),
    }
    return {k: v for k, v in wanted.items() if k not in os.environ}


def _demo_api_env(services: Any) -> dict[str, str]:
    """The local broker's admin login, so the demo's API can provision and revoke devices
    wherever the demo runs from (a folder without `.fleet/local.toml` too); the user's own
    setting wins."""
    from deploy.services import MQTT_ADMIN_USER

    wanted = {"FLEET_API_MQTT_ADMIN_URL": services.mqtt_url(MQTT_ADMIN_USER)}
    return {k: v for k, v in wanted.items() if k not in os.environ}


def _start_gateway_vehicles(supervisor: Supervisor, fleet: list[str], services: Any,
                            demo: DemoTenant, stop: StopSignals) -> None:
    """Each gateway vehicle: device simulators in one process, the real gateway in another."""
    from core.mqtt_url import parse_mqtt_url

    devices: dict[str, str] = demo.credentials.setdefault("devices", {})
    target = parse_mqtt_url(services.mqtt_url())
    for k, code in enumerate(demo.gateway_codes):
        _check_stop(stop)
        login = f"{demo.slug}/{code}"
        password = devices.setdefault(code, secrets.token_urlsafe(16))
        services.add_device_login(login, password)
        sim = supervisor.start(f"sim-{code}", [
            *fleet, "sim", "vehicle", "--seed", str(1000 + k), "--elm327", "--can", "slcan",
            "--gps"])
        paths = _sim_paths(wait_for_line(sim.log_path, "ready", sim, timeout_s=30, stop=stop))
        url = f"mqtt://{login.replace('/', '%2F')}:{password}@{target.host}:{target.port}"
        supervisor.start(f"gateway-{code}", [
            *fleet, "gateway", "--tenant", demo.slug, "--vehicle", code, "--mqtt", url,
            "--obd", paths["elm327"], "--can-interface", "slcan", "--can-channel", paths["can"],
            "--gps", paths["gps"], "--spool", str(STATE_DIR / f"spool-{code}.sqlite")])
    _save_credentials(demo.credentials)


def _sim_paths(line: str) -> dict[str, str]:
    """Parse the simulator's `ready elm327=/dev/pts/3 can=/dev/pts/4 gps=/dev/pts/5` line."""
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    missing = {"elm327", "can", "gps"} - fields.keys()
    if missing:
        raise RuntimeError(f"simulator did not report {sorted(missing)} in {line!r}")
    return fields


def _wait_http(url: str, child: Child, timeout_s: float, stop: StopSignals) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_stop(stop)
        if child.proc.poll() is not None:
            raise RuntimeError(f"the API stopped:\n{tail(child.log_path)}")
        with contextlib.suppress(OSError), urllib.request.urlopen(  # noqa: S310 (our own URL)
                url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"the API did not answer {url} within {timeout_s:.0f} s")


def _banner(port: int, demo: DemoTenant, supervisor: Supervisor) -> str:
    running = ", ".join(c.name for c in supervisor.children)
    return "\n".join([
        "",
        "  fleet-telemetry demo is running",
        f"  dispatcher map:  http://127.0.0.1:{port}/",
        f"  log in as:       {demo.admin_email}",
        f"  password:        {demo.admin_password}",
        f"  processes:       {running}",
        f"  logs:            {supervisor.log_dir}/",
        "  Ctrl-C stops everything.",
        "",
    ])
