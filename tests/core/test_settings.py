"""Typed settings: TOML, FLEET_* variables and clear errors."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from core.errors import SettingsError
from core.settings import DatabaseSettings, MqttSettings, load_settings


class Tuning(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batch_max_rows: int = 1000
    flush_interval_s: float = 0.5
    enabled: bool = True
    tags: list[str] = msgspec.field(default_factory=list)


class Root(msgspec.Struct, frozen=True, kw_only=True):
    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    tuning: Tuning = msgspec.field(default_factory=Tuning)


def test_defaults_without_any_source() -> None:
    s = load_settings(Root, environ={}, local_file=None)
    assert s.tuning.batch_max_rows == 1000
    assert s.database.url.startswith("postgresql://")


def test_env_maps_onto_nested_fields_and_converts_types() -> None:
    env = {
        "FLEET_DATABASE_URL": "postgresql://a@h/db",
        "FLEET_DATABASE_OWNER_URL": "postgresql://o@h/db",
        "FLEET_TUNING_BATCH_MAX_ROWS": "250",
        "FLEET_TUNING_FLUSH_INTERVAL_S": "0.25",
        "FLEET_TUNING_ENABLED": "false",
        "FLEET_TUNING_TAGS": '["a", "b"]',
        "FLEET_UNRELATED_THING": "ignored",
        "OTHER": "ignored",
    }
    s = load_settings(Root, environ=env, local_file=None)
    assert s.database.url == "postgresql://a@h/db"
    assert s.database.owner_url == "postgresql://o@h/db"
    assert s.tuning == Tuning(batch_max_rows=250, flush_interval_s=0.25, enabled=False,
                              tags=["a", "b"])


def test_layering_local_file_then_config_then_env(tmp_path: Path) -> None:
    local = tmp_path / "local.toml"
    local.write_text('[database]\nurl = "postgresql://local/db"\nowner_url = "postgresql://lo/db"\n'
                     '[redis]\nurl = "redis://x"\n')
    config = tmp_path / "fleet.toml"
    config.write_text('[database]\nurl = "postgresql://config/db"\n[tuning]\nbatch_max_rows = 7\n')
    s = load_settings(Root, config_file=config, environ={"FLEET_TUNING_BATCH_MAX_ROWS": "9"},
                      local_file=local)
    assert s.database.url == "postgresql://config/db"
    assert s.database.owner_url == "postgresql://lo/db"  # from the local file, not overridden
    assert s.tuning.batch_max_rows == 9


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[tuning]\nflush_interval_s = 2\n")
    s = load_settings(Root, environ={"FLEET_CONFIG": str(config)}, local_file=None)
    assert s.tuning.flush_interval_s == 2.0


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"\$\.tuning\.batch_max_rows") as info:
        load_settings(Root, environ={"FLEET_TUNING_BATCH_MAX_ROWS": "many"}, local_file=None)
    assert "int" in str(info.value)


def test_unknown_key_in_a_section_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text("[tuning]\nbatch_max_rowz = 1\n")
    with pytest.raises(SettingsError, match="batch_max_rowz"):
        load_settings(Root, config_file=config, environ={}, local_file=None)


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(Root, config_file=tmp_path / "nope.toml", environ={}, local_file=None)
    bad = tmp_path / "bad.toml"
    bad.write_text("[tuning\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(Root, config_file=bad, environ={}, local_file=None)

