"""The systemd unit asks for what the gateway needs and implements (notify + watchdog)."""

from __future__ import annotations

import configparser
from pathlib import Path

from core.settings import load_settings
from edge_gateway.config import GatewayProcessSettings

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "fleet-gateway.service"


def test_unit_runs_unprivileged_with_restart_and_watchdog() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    service = parser["Service"]
    assert service["Type"] == "notify"
    assert service["User"] not in ("", "root")
    assert "dialout" in service["SupplementaryGroups"].split()
    assert service["Restart"] == "always"
    assert int(service["WatchdogSec"]) > 0
    assert "fleet gateway --config" in service["ExecStart"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_example_config_loads() -> None:
    example = UNIT.parent / "gateway.toml.example"
    settings = load_settings(GatewayProcessSettings, example, environ={}, local_file=None)
    assert settings.gateway.vehicle == "truck-17"
    assert settings.signals.rates_hz["obd_rpm"] == 2
