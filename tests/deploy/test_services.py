"""`fleet services`: a second, private stack on free ports, up / status / down / up again,
and the broker's device ACL on the shared stack."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.broker_logins import device_acls, hash_verifies, mosquitto_hash
from core.mqtt_url import parse_mqtt_url
from core.ports import free_port
from deploy.errors import ServiceError
from deploy.services import MQTT_ADMIN_USER, MQTT_SERVICE_USER, LocalServices, ServicesSettings
from deploy.services.mosquitto import _same_dynsec

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LocalServices]:
    settings = ServicesSettings(state_dir=str(tmp_path / "state"), postgres_port=free_port(),
                                mqtt_port=free_port(), redis_port=free_port())
    stack = LocalServices(settings, log=lambda _m: None)
    yield stack
    stack.down()
    if stack.state != stack.project_state:
        shutil.rmtree(stack.state, ignore_errors=True)


def test_up_status_down_up_again(private_stack: LocalServices) -> None:
    private_stack.up()
    first = {s.name: s for s in private_stack.status()}
    assert all(s.healthy for s in first.values()), first
    assert "timescaledb 2." in first["postgres"].detail
    assert f"license {private_stack.settings.timescaledb_license}" in first["postgres"].detail
    assert "postgis 3." in first["postgres"].detail
    assert "mosquitto version 2" in first["mosquitto"].detail

    private_stack.up()  # idempotent while running
    assert all(s.healthy for s in private_stack.status())

    private_stack.down()
    stopped = private_stack.status()
    assert not any(s.running for s in stopped), stopped
    private_stack.down()  # idempotent while stopped

    private_stack.up()  # data and credentials survive a restart
    assert all(s.healthy for s in private_stack.status())
    env = private_stack.env()
    assert set(env) >= {"FLEET_DATABASE_URL", "FLEET_MQTT_URL", "FLEET_REDIS_URL"}
    local = (private_stack.project_state / "local.toml").read_text()
    assert env["FLEET_DATABASE_URL"] in local
    assert oct((private_stack.project_state / "credentials.json").stat().st_mode)[-3:] == "600"


def test_cli_env_output_evaluates_in_a_shell(services: LocalServices) -> None:
    out = subprocess.run(
        ["bash", "-c", f'eval "$({sys.executable} -m deploy.cli services env)" && '
                       'psql "$FLEET_DATABASE_OWNER_URL" -Atc "SELECT extname FROM pg_extension '
                       'ORDER BY 1"'],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["plpgsql", "postgis", "timescaledb"]


def test_cli_status_reports_every_service(services: LocalServices) -> None:
    out = subprocess.run([sys.executable, "-m", "deploy.cli", "services", "status"], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=60)
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["postgres", "mosquitto", "redis"]
    assert all(line.split()[1] == "healthy" for line in lines)


def _client(url: str, username: str, password: str, client_id: str = "") -> mqtt.Client:
    target = parse_mqtt_url(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=client_id or f"test-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(username, password)
    client.connect(target.host, target.port)
    client.loop_start()
    return client


def test_device_may_write_only_its_own_topics(services: LocalServices, tenant_slug: str) -> None:
    device, password = f"{tenant_slug}/truck-1", uuid.uuid4().hex
    services.add_device_login(device, password)
    target = parse_mqtt_url(services.mqtt_url())
    assert target.username is not None
    assert target.password is not None

    received: list[str] = []
    got_message = threading.Event()

    def on_message(_c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.topic)
        got_message.set()

    subscribed = threading.Event()
    watcher = _client(services.mqtt_url(), target.username, target.password)
    watcher.on_message = on_message
    watcher.on_subscribe = lambda *_args: subscribed.set()
    watcher.subscribe(f"fleet/v1/{tenant_slug}/#", qos=1)
    # Publishing before the SUBACK would be answered "no matching subscribers" (0x10).
    assert subscribed.wait(timeout=10)
    acks: dict[int, int] = {}
    acked = threading.Condition()

    def on_publish(_c: object, _u: object, mid: int, reason: mqtt.ReasonCode, _p: object) -> None:
        with acked:
            acks[mid] = reason.value
            acked.notify_all()

    dev = _client(services.mqtt_url(), device, password, client_id=device)
    dev.on_publish = on_publish
    try:
        own = dev.publish(f"fleet/v1/{tenant_slug}/truck-1/telemetry", b"{}", qos=1)
        other = dev.publish(f"fleet/v1/{tenant_slug}/truck-2/telemetry", b"{}", qos=1)
        with acked:
            assert acked.wait_for(lambda: {own.mid, other.mid} <= acks.keys(), timeout=10)
        assert acks[own.mid] == 0
        assert acks[other.mid] == 0x87  # MQTT v5 "Not authorized"
        assert got_message.wait(timeout=10)
        assert received == [f"fleet/v1/{tenant_slug}/truck-1/telemetry"]
    finally:
        for c in (dev, watcher):
            c.loop_stop()
            c.disconnect()


def test_wrong_device_password_is_refused(services: LocalServices, tenant_slug: str) -> None:
    services.add_device_login(f"{tenant_slug}/truck-1", "right-password")
    target = parse_mqtt_url(services.mqtt_url())
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id=f"{tenant_slug}/truck-1")
    client.username_pw_set(f"{tenant_slug}/truck-1", "wrong-password")
    result: list[int] = []
    done = threading.Event()

    def on_connect(_c: object, _u: object, _f: object, reason: mqtt.ReasonCode,
                   _p: object) -> None:
        result.append(reason.value)
        done.set()

    client.on_connect = on_connect
    client.connect(target.host, target.port)
    client.loop_start()
    try:
        assert done.wait(timeout=10)
        # Mosquitto 2.0 answers "Not authorized" (0x87); "Bad user name or password" (0x86) is
        # the other refusal the specification allows.
        assert result[0] in {0x86, 0x87}
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_port_taken_by_another_program_is_reported(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = int(squatter.getsockname()[1])
        stack = LocalServices(ServicesSettings(state_dir=str(tmp_path / "state"),
                                               redis_port=port), log=lambda _m: None)
        with pytest.raises(ServiceError, match=rf"port 127.0.0.1:{port} is already in use"):
            stack.redis_up()
    if stack.state != stack.project_state:
        shutil.rmtree(stack.state, ignore_errors=True)


def test_a_password_file_is_imported_once_into_the_plugins_logins(tmp_path: Path) -> None:
    """A broker from before the dynamic-security plugin keeps its device logins (the same
    PBKDF2 hashes), each bound to its client id with its own rules; the old service entry
    is replaced by the project's own logins."""
    stack = LocalServices(ServicesSettings(state_dir=str(tmp_path / "state")),
                          log=lambda _m: None)
    stack.mq_dir.mkdir(parents=True)
    stack.mq_passwd.write_text(f"{MQTT_SERVICE_USER}:{mosquitto_hash('old')}\n"
                               f"acme/truck-1:{mosquitto_hash('device-pw')}\n")
    wanted = stack.mosquitto._dynsec_wanted(None)
    clients = {c["username"]: c for c in wanted["clients"]}
    assert set(clients) == {MQTT_ADMIN_USER, MQTT_SERVICE_USER, "acme/truck-1"}
    device = clients["acme/truck-1"]
    assert device["clientid"] == "acme/truck-1"
    assert hash_verifies(device, "device-pw")
    assert hash_verifies(clients[MQTT_SERVICE_USER], stack.credentials()[MQTT_SERVICE_USER])
    roles = {r["rolename"]: r for r in wanted["roles"]}
    assert roles[device["roles"][0]["rolename"]]["acls"] == device_acls("acme/truck-1")
    # Read back from the broker's own file, nothing differs and nothing restarts; a changed
    # rule does.
    again = stack.mosquitto._dynsec_wanted(wanted)
    assert _same_dynsec(wanted, again)
    changed = {**again, "roles": [{**r, "acls": r["acls"][:-1]} for r in again["roles"]]}
    assert not _same_dynsec(changed, again)
