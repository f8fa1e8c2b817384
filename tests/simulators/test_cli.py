"""`fleet sim vehicle` and `fleet sim fleet` as a tester runs them."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pynmea2
import pytest
import serial

from deploy.cli import build_parser
from tests.conftest import TestDatabase

FLEET = [sys.executable, "-m", "deploy.cli"]
ROOT = Path(__file__).resolve().parents[2]


def test_sim_vehicle_serves_the_ports_it_prints(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*FLEET, "sim", "vehicle", "--seed", "4", "--elm327", "--can", "slcan", "--gps",
         "--fault", "gps_loss@0+600", "--duration-s", "30", "--link-dir", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 20
        while not line.startswith("ready") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        ports = dict(part.split("=", 1) for part in line.split()[1:])
        assert set(ports) == {"elm327", "can", "gps"}
        assert ports["gps"] == str(tmp_path / "gps")
        with serial.Serial(ports["gps"], 9600, timeout=3) as gps:
            gps.readline()  # may start mid-sentence
            sentence = pynmea2.parse(gps.readline().decode().strip(), check=True)
            assert sentence.sentence_type in {"RMC", "GGA", "VTG", "GSA"}
            rmc = next(s for s in (pynmea2.parse(gps.readline().decode().strip())
                                   for _ in range(8)) if s.sentence_type == "RMC")
            assert rmc.status == "V", "the scripted gps_loss is visible"
        with serial.Serial(ports["elm327"], 38400, timeout=3) as elm:
            elm.write(b"ATI\r")
            assert elm.read_until(b">").endswith(b"ELM327 v1.5\r\r>")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "fault gps_loss" in out


def test_sim_vehicle_rejects_bad_faults() -> None:
    done = subprocess.run([*FLEET, "sim", "vehicle", "--gps", "--fault", "boom@1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "unknown kind" in done.stderr


@pytest.mark.services
def test_sim_fleet_seeds_and_publishes(database: TestDatabase, mqtt_url: str,
                                       tenant_slug: str) -> None:
    env = {**os.environ, "FLEET_DATABASE_OWNER_URL": database.owner_url,
           "FLEET_MQTT_URL": mqtt_url}
    done = subprocess.run(
        [*FLEET, "sim", "fleet", "--vehicles", "4", "--tenant", tenant_slug, "--rate-hz", "5",
         "--batch-size", "5", "--duration-s", "1", "--seed-db"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "seeded tenant" in done.stdout, output
    assert "sent 20 samples in 4 messages" in done.stdout, output
    with psycopg.connect(database.owner_url) as conn:
        count = conn.execute("SELECT count(*) FROM vehicles v JOIN tenants t ON t.id = "
                             "v.tenant_id WHERE t.slug = %s", (tenant_slug,)).fetchone()
    assert count == (4,)


def test_vendor_mocks_are_delegated_when_installed() -> None:
    parser = build_parser()
    for name in ("samsara", "smartcar"):
        module = f"simulators.{name}"
        if importlib.util.find_spec(module) is None:
            with pytest.raises(SystemExit):
                parser.parse_args(["sim", name])
            continue
        args = parser.parse_args(["sim", name])
        assert args.func.__module__ == module
    args = parser.parse_args(["sim", "fleet", "--vehicles", "3", "--tenant", "t"])
    assert args.func.__module__ == "simulators.cli"
