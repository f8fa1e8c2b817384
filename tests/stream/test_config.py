"""Settings of the stream: validation at start-up, env overrides, source checks."""

from __future__ import annotations

import pytest

from core.errors import SettingsError
from core.settings import MqttSettings, load_settings
from stream.config import SourceSettings, StreamSettings
from stream.dataflow import load_detectors
from stream.errors import StreamConfigError
from stream.mqtt_source import MqttSource


def test_env_overrides_reach_every_section() -> None:
    s = load_settings(StreamSettings, environ={
        "FLEET_SOURCE_PARTITIONS": "4", "FLEET_STREAM_REORDER_WINDOW_MS": "2000",
        "FLEET_FILTERS_MAX_HDOP": "5", "FLEET_STREAM_DISABLED_DETECTORS": '["anomaly"]',
    }, local_file=None)
    assert s.source.partitions == 4
    assert s.stream.reorder_window_ms == 2000
    assert s.filters.max_hdop == 5.0
    assert s.stream.disabled_detectors == ["anomaly"]


def test_bad_values_are_refused_with_the_key() -> None:
    with pytest.raises(SettingsError, match="partitions"):
        load_settings(StreamSettings, environ={"FLEET_SOURCE_PARTITIONS": "0"}, local_file=None)
    with pytest.raises(SettingsError, match="share_group"):
        load_settings(StreamSettings, environ={"FLEET_SOURCE_SHARE_GROUP": "a/b"},
                      local_file=None)


def test_source_validates_its_settings() -> None:
    with pytest.raises(StreamConfigError, match="scheme"):
        MqttSource(mqtt=MqttSettings(url="http://x"), source=SourceSettings(),
                   database_url="postgresql://x/y")
    with pytest.raises(StreamConfigError, match="postgresql"):
        MqttSource(mqtt=MqttSettings(), source=SourceSettings(), database_url="sqlite://")
    src = MqttSource(mqtt=MqttSettings(), source=SourceSettings(share_group="g", tenant="acme",
                                                                 partitions=3),
                     database_url="postgresql://x/y")
    assert src.topic_filter == "$share/g/fleet/v1/acme/+/telemetry"
    assert src.list_parts() == ["p0", "p1", "p2"]


def test_disabled_detectors_are_left_out_and_unknown_names_refused() -> None:
    s = load_settings(StreamSettings, environ={"FLEET_STREAM_DISABLED_DETECTORS": '["anomaly"]'},
                      local_file=None)
    names = [d.name for d in load_detectors(s, lambda: None)]
    assert "anomaly" not in names
    assert names
    bad = load_settings(StreamSettings, environ={"FLEET_STREAM_DISABLED_DETECTORS": '["nope"]'},
                        local_file=None)
    with pytest.raises(StreamConfigError, match="nope"):
        load_detectors(bad, lambda: None)
