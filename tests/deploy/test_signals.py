"""Every long-running `fleet` command stops cleanly on SIGTERM and on SIGINT.

Each command runs as a subprocess against the real local services. Once it is up (a port
answers, a log line, or systemd's READY=1), the test sends the signal to the process's own
PID, not its group, and then expects: exit status 0 within a bound, exactly one line saying
it stopped and by which signal, no traceback or panic, and none of its descendants left.

The commands are started as a shell starts a background job (`fleet demo &` from a script):
with SIGINT ignored. Python keeps an inherited SIG_IGN for SIGINT, which is why `fleet demo`
once ignored `kill -INT` altogether; every command must install its own handlers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.protocol import Sample
from deploy.services import LocalServices
from tests.conftest import TestDatabase
from tests.deploy.test_demo import demo_env, free_port
from tests.stream.conftest import make_fleet
from tests.stream.streamproc import ROOT, StreamProcess, count, mqtt_client, publish, wait_for

pytestmark = pytest.mark.services

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
STOP_WITHIN_S = 20.0


def _as_background_job() -> None:
    # What `cmd &` in a non-interactive shell does to the child (POSIX job control off).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # The command name is in parentheses and may hold spaces: split after it.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Command:
    """A running command and its combined output."""

    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout_s: float, times: int = 1) -> None:
        wait_for(lambda: self.log().count(needle) >= times or self.proc.poll() is not None,
                 timeout_s, f"{needle!r} in the log")
        assert self.proc.poll() is None, f"ended early ({self.proc.returncode}):\n{self.log()}"

    def stop_and_check(self, sig: signal.Signals, command: str,
                       timeout_s: float = STOP_WITHIN_S) -> None:
        """Send `sig` to the PID; assert a clean exit, one stop line, and no descendant left."""
        below = descendants(self.proc.pid)
        started = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} did not stop within {timeout_s} s of {sig.name}:\n"
                        f"{self.log()[-3000:]}")
        took = time.monotonic() - started
        log = self.log()
        assert code == 0, f"exit {code} after {sig.name}:\n{log[-3000:]}"
        stop_lines = [line for line in log.splitlines() if re.search(r"\bstopped\b", line)]
        assert len(stop_lines) == 1, log[-3000:]
        assert f"fleet {command}: stopped by {sig.name}" in stop_lines[0], log[-3000:]
        assert "Traceback" not in log, log[-3000:]
        assert "panicked" not in log, log[-3000:]
        left = [p for p in below if alive(p)]
        assert not left, f"left running after {command} stopped: {left}"
        assert took < timeout_s


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Start `python -m deploy.cli ARGS` as a background job; kill what is left at the end."""
    started: list[Command] = []

    def run(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> Command:
        log_path = tmp_path / f"cmd-{len(started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], cwd=cwd,
                                    env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    preexec_fn=_as_background_job)  # noqa: PLW1509
        started.append(Command(proc, log_path))
        return started[-1]

    yield run
    for cmd in started:
        for pid in [cmd.proc.pid, *descendants(cmd.proc.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        cmd.proc.wait(10)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (our own localhost)
            return True
    except urllib.error.HTTPError:
        return True  # a mock may answer 401 without a token: it is up
    except OSError:
        return False


# -- the stream -----------------------------------------------------------------------------

@pytest.fixture
def stream_settings(services: LocalServices, module_database: TestDatabase, tmp_path: Path,
                    tenant_slug: str) -> Callable[[int], StreamProcess]:
    """Settings of a throwaway stream: own broker sessions, recovery dir and cluster ports."""

    def make(processes: int) -> StreamProcess:
        stream = StreamProcess(tmp_path, ingest_url=module_database.ingest_url,
                               mqtt_url=services.mqtt_url(), redis_url=services.redis_url(),
                               tenant=tenant_slug, partitions=processes, processes=processes)
        stream.presubscribe()
        return stream

    return make


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("processes", [1, 2])
def test_stream_stops_cleanly(sig: signal.Signals, processes: int,
                              stream_settings: Callable[[int], StreamProcess],
                              start: Callable[..., Command]) -> None:
    cmd = start(["stream"], stream_settings(processes).env)
    cmd.wait_for_log("MQTT partition", timeout_s=60, times=processes)
    if processes > 1:
        assert len(descendants(cmd.proc.pid)) >= processes  # the cluster's processes
    cmd.stop_and_check(sig, "stream")


def test_stream_stopped_mid_flow_loses_nothing(
        services: LocalServices, module_database: TestDatabase, tenant_slug: str,
        stream_settings: Callable[[int], StreamProcess], start: Callable[..., Command]) -> None:
    """SIGTERM while messages arrive; after a restart every sample is stored exactly once."""
    vehicle = make_fleet(module_database, tenant_slug, ["v1"]).vehicles["v1"]
    stream = stream_settings(1)
    cmd = start(["stream"], stream.env)
    cmd.wait_for_log("MQTT partition", timeout_s=60)
    client = mqtt_client(services.mqtt_url())
    t0 = time.time_ns() // 1_000_000 - 600_000
    messages, per_message = 40, 5
    try:
        for k in range(messages):
            publish(client, tenant_slug, "v1", [
                Sample(seq=seq, t_ms=t0 + seq * 1000, speed_kph=30.0, ignition=True)
                for seq in range(k * per_message + 1, (k + 1) * per_message + 1)])
            if k == messages // 2:
                cmd.proc.send_signal(signal.SIGTERM)  # stop while the rest is published
    finally:
        client.disconnect()
        client.loop_stop()
    assert cmd.proc.wait(STOP_WITHIN_S) == 0, cmd.log()
    again = start(["stream"], stream.env)
    total = messages * per_message
    url = module_database.owner_url
    rows = "SELECT count(*) FROM telemetry WHERE vehicle_id = %s"
    wait_for(lambda: count(url, rows, vehicle) >= total, 60, f"{total} telemetry rows")
    assert count(url, rows, vehicle) == total
    assert count(url, "SELECT count(DISTINCT seq) FROM telemetry WHERE vehicle_id = %s",
                 vehicle) == total
    again.stop_and_check(signal.SIGINT, "stream")


# -- the API and the gateway ----------------------------------------------------------------

@pytest.mark.parametrize("sig", SIGNALS)
def test_api_stops_cleanly(sig: signal.Signals, services: LocalServices,
                           module_database: TestDatabase, start: Callable[..., Command]) -> None:
    port = free_port()
    cmd = start(["api", "--host", "127.0.0.1", "--port", str(port)],
                demo_env(services, module_database))
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/healthz") or cmd.proc.poll() is not None,
             60, "the API")
    assert cmd.proc.poll() is None, cmd.log()
    cmd.stop_and_check(sig, "api")


@pytest.mark.parametrize("sig", SIGNALS)
def test_gateway_stops_cleanly(sig: signal.Signals, services: LocalServices, tmp_path: Path,
                               tenant_slug: str, start: Callable[..., Command]) -> None:
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(notify))
        server.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=str(notify))
        env.pop("WATCHDOG_USEC", None)
        cmd = start(["gateway", "--tenant", tenant_slug, "--vehicle", "v1",
                     "--mqtt", services.mqtt_url(), "--spool", str(tmp_path / "spool.db")], env)
        assert server.recv(1024).startswith(b"READY=1"), cmd.log()
        cmd.stop_and_check(sig, "gateway")


# -- the simulators -------------------------------------------------------------------------

@pytest.mark.parametrize("sig", SIGNALS)
def test_sim_vehicle_stops_cleanly(sig: signal.Signals, start: Callable[..., Command]) -> None:
    cmd = start(["sim", "vehicle", "--elm327", "--can", "slcan", "--gps"], dict(os.environ))
    cmd.wait_for_log("ready ", timeout_s=30)
    cmd.stop_and_check(sig, "sim vehicle")


@pytest.mark.parametrize("sig", SIGNALS)
def test_sim_fleet_stops_cleanly(sig: signal.Signals, services: LocalServices, tenant_slug: str,
                                 start: Callable[..., Command]) -> None:
    cmd = start(["sim", "fleet", "--vehicles", "3", "--tenant", tenant_slug,
                 "--mqtt", services.mqtt_url(), "--rate-hz", "2", "--batch-size", "2"],
                dict(os.environ))
    cmd.wait_for_log("publishing", timeout_s=30)
    time.sleep(1.0)  # into the publishing loop
    cmd.stop_and_check(sig, "sim fleet")
    assert "sent " in cmd.log()  # it flushed and reported what it sent


@pytest.mark.parametrize("sig", SIGNALS)
@pytest.mark.parametrize("mock", ["samsara", "smartcar"])
def test_vendor_mocks_stop_cleanly(sig: signal.Signals, mock: str,
                                   start: Callable[..., Command]) -> None:
    port = free_port()
    cmd = start(["sim", mock, "--port", str(port)], dict(os.environ))
    wait_for(lambda: answers(f"http://127.0.0.1:{port}/") or cmd.proc.poll() is not None,
             30, f"the {mock} mock")
    assert cmd.proc.poll() is None, cmd.log()
    cmd.stop_and_check(sig, f"sim {mock}")


# -- the demo -------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", SIGNALS)
def test_demo_stops_cleanly(sig: signal.Signals, services: LocalServices,
                            module_database: TestDatabase, tmp_path: Path,
                            start: Callable[..., Command]) -> None:
    port = free_port()
    tenant = f"t{uuid.uuid4().hex[:10]}"
    cmd = start(["demo", "--tenant", tenant, "--vehicles", "1", "--gateway-vehicles", "0",
                 "--port", str(port)], demo_env(services, module_database), cwd=tmp_path)
    cmd.wait_for_log("password:", timeout_s=90)
    assert descendants(cmd.proc.pid), "the demo's parts"
    cmd.stop_and_check(sig, "demo")


# -- a part that cannot reach what it needs -------------------------------------------------

def _refused_at_start(cmd: Command, command: str, says: str) -> None:
    """Exit 2 within a bound, with one line naming what is unreachable and no traceback."""
    code = cmd.proc.wait(90)
    log = cmd.log()
    assert code == 2, log
    assert "Traceback" not in log, log
    assert "panicked" not in log, log
    lines = [line for line in log.splitlines() if line.startswith(f"fleet {command}: ")]
    assert len(lines) == 1, log
    assert says in lines[0], log


@pytest.mark.parametrize("down", ["broker", "database"])
def test_stream_says_what_is_unreachable(down: str, stream_settings: Callable[[int],
                                         StreamProcess], start: Callable[..., Command]) -> None:
    port = free_port()  # nothing listens there
    env = dict(stream_settings(1).env)
    if down == "broker":
        env["FLEET_MQTT_URL"] = f"mqtt://fleet:secret@127.0.0.1:{port}"
        says = f"cannot connect to the MQTT broker 127.0.0.1:{port}"
    else:
        env["FLEET_DATABASE_INGEST_URL"] = f"postgresql://fleet:secret@127.0.0.1:{port}/fleet"
        says = "cannot connect to load geofences"
    _refused_at_start(start(["stream"], env), "stream", says)


def test_stream_cluster_says_its_port_is_taken(stream_settings: Callable[[int], StreamProcess],
                                               start: Callable[..., Command]) -> None:
    """A port of the local cluster already bound: one line naming it and the setting."""
    stream = stream_settings(2)
    base = int(stream.env["FLEET_STREAM_PROCESS_BASE_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))
        squatter.listen()
        cmd = start(["stream"], stream.env)
        _refused_at_start(cmd, "stream", f"127.0.0.1:{base + 1} are in use")
    assert "stream.process_base_port" in cmd.log()


def test_api_says_the_database_is_unreachable(services: LocalServices,
                                              module_database: TestDatabase,
                                              start: Callable[..., Command]) -> None:
    port = free_port()
    env = demo_env(services, module_database)
    env["FLEET_DATABASE_URL"] = f"postgresql://fleet:secret@127.0.0.1:{port}/fleet"
    cmd = start(["api", "--host", "127.0.0.1", "--port", str(free_port())], env)
    _refused_at_start(cmd, "api", f"database unavailable at 127.0.0.1:{port}/fleet")
    assert "serving on" not in cmd.log()
