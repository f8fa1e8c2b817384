"""Settings: TOML + flags, validation with clear errors, the `fleet gateway` entry point."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from edge_gateway.cli import load, register
from edge_gateway.config import GatewayProcessSettings, apply_overrides
from edge_gateway.errors import ConfigError


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser)
    return parser.parse_args(argv)


def test_flags_override_the_file(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[gateway]\ntenant = "acme"\nvehicle = "a1"\n[gps]\nport = "/dev/x"\n')
    args = _args(["--config", str(config), "--vehicle", "b2", "--can-interface", "virtual",
                  "--can-channel", "c0", "--dbc", "a.dbc", "--dbc", "b.dbc",
                  "--mqtt", "mqtt://u:p@h:1", "--spool", str(tmp_path / "s.db")])
    settings = load(args)
    assert isinstance(settings, GatewayProcessSettings)
    assert settings.gateway.tenant == "acme"
    assert settings.gateway.vehicle == "b2"
    assert settings.gps.port == "/dev/x"
    assert settings.can.dbc_files == ["a.dbc", "b.dbc"]
    assert settings.mqtt.url == "mqtt://u:p@h:1"


def test_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match="obd_rmp"):
        apply_overrides(GatewayProcessSettings(), signals={"rates_hz": {"obd_rmp": 2.0}})
    with pytest.raises(ConfigError, match="vehicle"):
        apply_overrides(GatewayProcessSettings(), gateway={"vehicle": "a/b"})


def test_cli_reports_a_bad_setting_and_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "gateway", "--vehicle", "no/slash",
         "--spool", str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "fleet gateway:" in proc.stderr
    assert "vehicle" in proc.stderr
