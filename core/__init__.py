"""The foundation every part of fleet-telemetry imports and that imports none of them.

Settings (`settings`: the typed loader from TOML and `FLEET_*`), the root error (`errors`),
one logging set-up (`logs`), stopping on signals (`stopping`), the MQTT URL helper
(`mqtt_url`) and the contracts between the parts: the wire protocol of MQTT (`protocol`) and
the live contract of Redis (`live`). It needs only the standard library and msgspec, so a
Raspberry Pi's gateway install carries it; an import contract in pyproject.toml keeps it so.
"""
