"""The OBD-II source finds its ELM327 again: after an adapter power cycle, and after a restart
of the gateway while the adapter stays powered.

The emulator is reached by a link, as a real adapter is by /dev/serial/by-id: a power-cycled
USB adapter, like the emulator restarted here, comes back as a new device (another
/dev/pts number here), and only the link leads to it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import simulators.elm327 as sim_elm
import simulators.vehicle as sim_vehicle
from core.protocol import Telemetry, decode
from tests.edge_gateway.helpers import ModelDriver, mqtt_client, wait_for
from tests.edge_gateway.test_obd_simulator import _settings, gateway_and_samples

pytestmark = pytest.mark.services


def _model() -> sim_vehicle.VehicleModel:
    # No parking between trips: with the ignition off the adapter rightly answers
    # "UNABLE TO CONNECT", which is not what these tests are about.
    model = sim_vehicle.VehicleModel(7, warm_engine=True, park_between_trips=False)
    model.step(30.0)
    return model


async def test_obd_resumes_after_an_adapter_power_cycle(
        tmp_path: Path, mqtt_url: str, tenant_slug: str) -> None:
    model = _model()
    link = tmp_path / "obd"
    first = sim_elm.Elm327Emulator(model, link_path=link)
    with ModelDriver(model):
        port = first.start()
        try:
            old_device = os.readlink(link)
            settings = _settings(tmp_path, mqtt_url, tenant_slug, port,
                                 {"obd_rpm": 2, "obd_speed": 2})
            async with gateway_and_samples(settings, mqtt_url) as (gateway, samples):
                await wait_for(lambda: sum(s.rpm is not None for s in samples) >= 3, 30,
                               "rpm before the power cycle")
                first.stop()  # power off: the pty and the link disappear
                off_at = time.time_ns() // 1_000_000
                await wait_for(lambda: gateway.sources["obd"].health.get("errors") >= 1,
                               15, "the source to notice the adapter is gone")
                # The source has closed the old device, so its number is free again: hold it
                # (or a lower one) so the new adapter must come back under another number.
                holder = os.openpty()
                try:
                    second = sim_elm.Elm327Emulator(model, link_path=link)
                    second.start()
                    try:
                        new_device = os.readlink(link)
                        on_at = time.time_ns() // 1_000_000
                        await wait_for(lambda: any(s.rpm is not None and s.t_ms > on_at
                                                   for s in samples), 40,
                                       "rpm from the power-cycled adapter")
                        commands = second.interpreter.commands
                    finally:
                        second.stop()
                finally:
                    for fd in holder:
                        os.close(fd)
        finally:
            first.stop()
    assert new_device != old_device, "the adapter came back under the same device"
    assert commands > 0
    gap = [s for s in samples if s.rpm is not None and off_at + 500 < s.t_ms < on_at]
    assert not gap, "rpm published while the adapter was off"


async def test_obd_resumes_after_a_gateway_restart(
        tmp_path: Path, mqtt_url: str, tenant_slug: str) -> None:
    """The `fleet gateway` process is stopped (SIGTERM, then kill -9 mid-poll) and started
    again while the adapter keeps running, as `fleet bench gateway` does."""
    model = _model()
    emulator = sim_elm.Elm327Emulator(model, link_path=tmp_path / "obd")
    config = tmp_path / "gateway.toml"
    with ModelDriver(model), emulator as port, \
            (tmp_path / "gateway.log").open("ab") as log:
        config.write_text(_config(tmp_path, mqtt_url, tenant_slug, port))
        argv = [sys.executable, "-m", "deploy.cli", "gateway", "--config", str(config),
                "--log-level", "WARNING"]
        rpm_t: list[int] = []
        async with mqtt_client(mqtt_url) as client:
            await client.subscribe(f"fleet/v1/{tenant_slug}/+/telemetry", qos=1)

            async def collect() -> None:
                async for m in client.messages:
                    msg = decode(bytes(m.payload), Telemetry)  # type: ignore[arg-type]
                    assert isinstance(msg, Telemetry), msg
                    rpm_t.extend(s.t_ms for s in msg.samples if s.rpm is not None)

            collector = asyncio.create_task(collect())
            try:
                for stop in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
                    started = time.time_ns() // 1_000_000
                    proc = subprocess.Popen(argv, cwd=tmp_path,  # noqa: ASYNC220
                                            stdout=subprocess.DEVNULL, stderr=log)
                    try:
                        await wait_for(lambda s=started: sum(t > s for t in rpm_t) >= 3,
                                       60, "rpm from this gateway process")
                    finally:
                        proc.send_signal(stop)
                        proc.wait(timeout=30)
            finally:
                collector.cancel()
                # The gateway's retained status would outlive the test on the shared broker.
                await client.publish(f"fleet/v1/{tenant_slug}/obd2/status", b"", retain=True)
    assert emulator.interpreter.commands > 0


def _config(tmp_path: Path, mqtt_url: str, tenant: str, port: str) -> str:
    return f"""
[gateway]
tenant = "{tenant}"
vehicle = "obd2"
spool_path = "{tmp_path / 's.db'}"
batch_interval_s = 0.2
reconnect_min_s = 0.2
reconnect_max_s = 1.0
[mqtt]
url = "{mqtt_url}"
[obd]
port = "{port}"
timeout_s = 0.1
[signals]
rates_hz = {{ obd_rpm = 5, obd_speed = 2 }}
"""
