"""Settings of the `fleet db` process."""

from __future__ import annotations

import msgspec

from core.settings import DatabaseSettings


class DbCommandSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`fleet db` needs only the database section."""

    database: DatabaseSettings = msgspec.field(default_factory=DatabaseSettings)
