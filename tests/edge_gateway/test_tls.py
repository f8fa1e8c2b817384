"""MQTT over TLS with a private CA and a client certificate (mutual TLS)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path

import aiomqtt
import pytest

from core.protocol import Status, decode
from edge_gateway.config import GatewayProcessSettings, apply_overrides
from edge_gateway.gateway import Gateway
from tests.edge_gateway.helpers import PrivateBroker, free_port, mqtt_client, wait_for

pytestmark = pytest.mark.services


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _pki(d: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=test-ca", "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    for name, extra in (("server", "subjectAltName=IP:127.0.0.1"),
                        ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text(extra + "\n")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                 "-out", f"{name}.pem", cwd=d)


async def test_gateway_connects_with_ca_and_client_certificate(tmp_path: Path,
                                                               tenant_slug: str) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    _pki(pki)
    tls_port = free_port()
    broker = PrivateBroker(tmp_path / "broker", extra_lines=(
        f"listener {tls_port} 127.0.0.1",
        f"cafile {pki / 'ca.pem'}",
        f"certfile {pki / 'server.pem'}",
        f"keyfile {pki / 'server.key'}",
        "require_certificate true",
    ))
    broker.start()
    settings = apply_overrides(
        GatewayProcessSettings(),
        gateway={"tenant": tenant_slug, "vehicle": "v1", "spool_path": str(tmp_path / "s.db")},
        mqtt={"url": f"mqtts://127.0.0.1:{tls_port}", "ca_file": str(pki / "ca.pem"),
              "cert_file": str(pki / "client.pem"), "key_file": str(pki / "client.key")})
    statuses: list[Status] = []
    try:
        async with mqtt_client(broker.url) as client:
            await client.subscribe(f"fleet/v1/{tenant_slug}/v1/status", qos=1)

            async def collect() -> None:
                async for m in client.messages:
                    st = decode(bytes(m.payload), Status)  # type: ignore[arg-type]
                    if isinstance(st, Status):
                        statuses.append(st)

            collector = asyncio.create_task(collect())
            gateway = Gateway(settings)
            task = asyncio.create_task(gateway.run())
            try:
                await wait_for(lambda: bool(statuses), 20, "the birth message over TLS")
                # Without the client certificate the broker refuses the same connection.
                no_cert = aiomqtt.TLSParameters(ca_certs=str(pki / "ca.pem"))
                with pytest.raises(aiomqtt.MqttError):
                    async with aiomqtt.Client("127.0.0.1", tls_port, tls_params=no_cert,
                                              protocol=aiomqtt.ProtocolVersion.V5,
                                              timeout=2):
                        pass
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, 15)
                collector.cancel()
    finally:
        broker.stop()
    assert statuses[0].state == "online"
    assert gateway.uplink.state == "connected"
