"""Broker logins of devices, kept in Mosquitto's dynamic-security plugin.

Why the plugin and not a password file with a pattern ACL: a pattern ACL is checked when a
message is delivered, not when a filter is subscribed, so a device was granted ``#`` and
``$share/...`` and could join the stream's shared-subscription group, taking (and losing) a
share of every tenant's telemetry; and a password file cannot bind a client id to a login, so
a device could connect with another device's, or a stream partition's, client id and take over
its session. The plugin checks subscriptions at SUBACK (0x87 "not authorised") and can fix a
login's client id.

Every device gets a client whose client id is its login, and a role of its own with literal
topics: Mosquitto 2.0's plugin has no ``%u`` substitution (measured: a ``%u`` rule matches
nothing), and a literal subscribe rule also refuses ``$share/{group}/`` + the device's own
topic. Commands travel as JSON on ``$CONTROL/dynamic-security/v1`` with an admin login, so
any Mosquitto with the plugin works: the project's local one, or a production broker.

The rules live here once: `dynsec_config` writes them into a new broker's configuration file,
the API applies them per device, and docs/protocol.md describes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.errors import FleetError
from core.mqtt_url import parse_mqtt_url
from core.protocol import DEVICE_PUBLISHES, DEVICE_SUBSCRIBES, TOPIC_ROOT

CONTROL_TOPIC: Final = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC: Final = f"{CONTROL_TOPIC}/response"
ADMIN_ROLE: Final = "fleet-admin"
SERVICE_ROLE: Final = "fleet-service"
DEVICE_ROLE_PREFIX: Final = "device:"

DEFAULT_ACL_ACCESS: Final = {
    # Nothing is allowed that a role does not grant: a login without a role can connect and
    # do nothing.
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}



class BrokerLoginError(FleetError):
    """The broker refused a login change, or did not answer."""


def _acl(kind: str, topic: str, priority: int = 0) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": priority, "allow": True}


def device_role(login: str) -> str:
    """The role that holds one device's rules."""
    return f"{DEVICE_ROLE_PREFIX}{login}"


def device_acls(login: str) -> list[dict[str, Any]]:
    """A device may publish on its own vehicle's channels and subscribe to, and receive, its
    own commands; nothing else (the default access denies the rest)."""
    base = f"{TOPIC_ROOT}/v1/{login}"
    rules = [_acl("publishClientSend", f"{base}/{c.value}") for c in DEVICE_PUBLISHES]
    for c in DEVICE_SUBSCRIBES:
        rules += [_acl("subscribeLiteral", f"{base}/{c.value}"),
                  _acl("publishClientReceive", f"{base}/{c.value}")]
    return rules


def service_acls() -> list[dict[str, Any]]:
    """Service accounts (the stream, the API, pullers, simulators): every fleet topic, shared
    subscriptions, and the broker's $SYS tree (read)."""
    root = f"{TOPIC_ROOT}/#"
    return [
        _acl("publishClientSend", root),
        _acl("publishClientReceive", root),
        _acl("subscribePattern", root),
        _acl("subscribePattern", f"$share/+/{root}"),
        _acl("publishClientReceive", "$SYS/#"),
        _acl("subscribePattern", "$SYS/#"),
    ]


def admin_acls() -> list[dict[str, Any]]:
    """The admin login sends plugin commands and reads their answers, nothing else."""
    return [
        _acl("publishClientSend", f"{CONTROL_TOPIC}/#"),
        _acl("publishClientReceive", f"{CONTROL_TOPIC}/#"),
        _acl("subscribePattern", f"{CONTROL_TOPIC}/#"),
    ]


MOSQUITTO_ITERATIONS: Final = 101  # mosquitto_passwd's default for $7$ hashes


def mosquitto_hash(password: str, *, salt: bytes | None = None,
                   iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """A Mosquitto 2 password hash: ``$7$iterations$b64(salt)$b64(pbkdf2_sha512)``, the form
    of its password files and, split into fields, of the plugin's configuration."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def hash_verifies(fields: dict[str, Any], password: str) -> bool:
    """Whether a client entry's password fields (`hash_fields`) are those of `password`."""
    try:
        salt = base64.b64decode(fields["salt"])
        expected = base64.b64decode(fields["password"])
        iterations = int(fields["iterations"])
    except (KeyError, ValueError, TypeError):
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def hash_fields(mosquitto_hash: str) -> dict[str, Any]:
    """The plugin's password fields from a Mosquitto ``$7$`` hash (the same PBKDF2-SHA512)."""
    parts = mosquitto_hash.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise ValueError("not a Mosquitto $7$ password hash")
    return {"iterations": int(parts[2]), "salt": parts[3], "password": parts[4]}


def device_client(login: str, mosquitto_hash: str) -> dict[str, Any]:
    """A device's client entry in the plugin's configuration file."""
    return {"username": login, "clientid": login, **hash_fields(mosquitto_hash),
            "roles": [{"rolename": device_role(login)}]}


def dynsec_config(*, admins: Iterable[tuple[str, str]], services: Iterable[tuple[str, str]],
                  devices: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
    """The plugin's configuration file for a broker: (login, ``$7$`` hash) pairs per kind."""
    clients: list[dict[str, Any]] = []
    roles = [{"rolename": ADMIN_ROLE, "acls": admin_acls()},
             {"rolename": SERVICE_ROLE, "acls": service_acls()}]
    for login, pw_hash in admins:
        clients.append({"username": login, **hash_fields(pw_hash),
                        "roles": [{"rolename": ADMIN_ROLE}]})
    for login, pw_hash in services:
        clients.append({"username": login, **hash_fields(pw_hash),
                        "roles": [{"rolename": SERVICE_ROLE}]})
    for login, pw_hash in devices:
        clients.append(device_client(login, pw_hash))
        roles.append({"rolename": device_role(login), "acls": device_acls(login)})
    return {"clients": clients, "roles": roles, "groups": [],
            "defaultACLAccess": dict(DEFAULT_ACL_ACCESS)}


def add_device_commands(login: str, password: str) -> list[dict[str, Any]]:
    """Replace any client and role of that login, then create both afresh."""
    role = device_role(login)
    return [
        *remove_device_commands(login),
        {"command": "createRole", "rolename": role, "acls": device_acls(login)},
        {"command": "createClient", "username": login, "password": password,
         "clientid": login, "roles": [{"rolename": role}]},
    ]


def remove_device_commands(login: str) -> list[dict[str, Any]]:
    """Deleting the client ends its live session (the plugin kicks it)."""
    return [{"command": "deleteClient", "username": login},
            {"command": "deleteRole", "rolename": device_role(login)}]


def stray_logins(admin: BrokerAdmin, active: set[str]) -> tuple[list[str], list[str]]:
    """(device logins on the broker that `active` lacks, `active` logins the broker lacks).
    A device login is one with a '/' ("{tenant}/{vehicle}"); service and admin logins are
    never stray."""
    [answer] = admin.run([{"command": "listClients", "verbose": False, "count": -1,
                           "offset": 0}])
    on_broker = {str(c) for c in (answer.get("data") or {}).get("clients", [])}
    devices = {login for login in on_broker if "/" in login}
    return sorted(devices - active), sorted(active - devices)


class BrokerAdmin:
    """Sends plugin commands with an admin login and waits for every answer.

    Synchronous (paho): callers on an event loop run it in an executor. Each call is its own
    short connection with a unique client id, and each command carries correlation data, so
    several API replicas can change logins at once although all admins see all answers.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.target = parse_mqtt_url(url)
        self.timeout_s = timeout_s

    def add_device(self, login: str, password: str) -> None:
        """Create (or replace) a device's login: it can connect at once when this returns."""
        self.run(add_device_commands(login, password))

    def remove_device(self, login: str) -> None:
        """Delete a device's login and end its session; absent is fine."""
        self.run(remove_device_commands(login))

    def run(self, commands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send `commands` in one message and return their answers in order; raise
        BrokerLoginError for an error answer, except "not found" for a delete (removing what
        is absent is done)."""
        tags = [uuid.uuid4().hex for _ in commands]
        answers = _Exchange(self, tags).send(
            [{**c, "correlationData": t} for c, t in zip(commands, tags, strict=True)])
        for command, answer in zip(commands, answers, strict=True):
            error = str(answer.get("error") or "")
            absent = command["command"].startswith("delete") and "not found" in error.lower()
            if error and not absent:
                raise BrokerLoginError(f"{command['command']}: {error}")
        return answers


class _Exchange:
    """One connection: subscribe to the answers, send the commands, collect ours."""

    def __init__(self, admin: BrokerAdmin, tags: list[str]) -> None:
        self.admin = admin
        self.tags = tags
        self.answers: dict[str, dict[str, Any]] = {}
        self.failure: list[str] = []
        self.subscribed = threading.Event()
        self.done = threading.Event()

    def _fail(self, why: str) -> None:
        self.failure.append(why)
        self.subscribed.set()
        self.done.set()

    def on_connect(self, client: Any, _u: object, _f: object, reason: Any, _p: object
                   ) -> None:
        if reason.is_failure:
            self._fail(f"broker refused the admin login: {reason}")
        else:
            client.subscribe(RESPONSE_TOPIC, qos=1)

    def on_subscribe(self, _c: object, _u: object, _m: object, codes: list[Any], _p: object
                     ) -> None:
        if any(code.is_failure for code in codes):
            self._fail(f"the admin login may not read {RESPONSE_TOPIC}: {codes[0]}")
        self.subscribed.set()

    def on_message(self, _c: object, _u: object, msg: Any) -> None:
        try:
            body = msgspec.json.decode(msg.payload)
        except msgspec.DecodeError:
            return
        for answer in body.get("responses", []) if isinstance(body, dict) else []:
            tag = answer.get("correlationData") if isinstance(answer, dict) else None
            if tag in self.tags:
                self.answers[tag] = answer
        if len(self.answers) == len(self.tags):
            self.done.set()

    def send(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        target, timeout_s = self.admin.target, self.admin.timeout_s
        client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                             client_id=f"fleet-admin-{uuid.uuid4().hex[:12]}")
        if target.username:
            client.username_pw_set(target.username, target.password)
        if target.tls:
            client.tls_set()
        client.on_connect = self.on_connect
        client.on_subscribe = self.on_subscribe
        client.on_message = self.on_message
        try:
            client.connect(target.host, target.port, keepalive=30)
        except OSError as exc:
            raise BrokerLoginError(f"cannot reach the broker: {exc}") from exc
        client.loop_start()
        try:
            if not self.subscribed.wait(timeout_s):
                raise BrokerLoginError("the broker did not accept the admin login in time")
            if not self.failure:
                client.publish(CONTROL_TOPIC, msgspec.json.encode({"commands": commands}),
                               qos=1)
            if not self.done.wait(timeout_s):
                # A broker without the plugin, or an admin without the right to publish
                # there, drops the message silently.
                raise BrokerLoginError(
                    f"no answer from the dynamic-security plugin within {timeout_s:.0f} s (is "
                    f"it loaded, and may this login publish to {CONTROL_TOPIC}?)")
        finally:
            client.disconnect()
            client.loop_stop()
        if self.failure:
            raise BrokerLoginError(self.failure[0])
        return [self.answers[t] for t in self.tags]
