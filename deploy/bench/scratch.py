"""The one scratch-database helper of the benchmarks: a migrated database of their own."""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from core.settings import DatabaseSettings
from deploy.errors import DeployError


@dataclass(frozen=True)
class Scratch:
    """A benchmark's own database, migrated: its name, edition and role URLs."""

    name: str
    edition: str
    owner_url: str
    ingest_url: str
    app_url: str


def db_url(url: str, database: str) -> str:
    """`url` with another database name."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.contextmanager
def scratch_database(db: DatabaseSettings, label: str, *, keep: bool = False
                     ) -> Iterator[Scratch]:
    """Create, migrate and (unless `keep`) finally drop a database `bench_{label}_{random}`,
    so a benchmark never touches the data of the configured one."""
    from deploy.services import drop_database, provision_database
    from storage.migrate import migrate

    if not db.admin_url:
        raise DeployError(f"fleet bench {label} needs database.admin_url to create a scratch "
                          "database")
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = db_url(db.admin_url, "postgres")
    provision_database(admin, name)
    try:
        owner = db_url(db.owner_url, name)
        edition = migrate(owner, log=lambda _m: None).edition
        yield Scratch(name, edition, owner, db_url(db.ingest_url, name), db_url(db.url, name))
    finally:
        if keep:
            print(f"scratch database kept: {name}", file=sys.stderr)
        else:
            drop_database(admin, name)


def local_database() -> DatabaseSettings:
    """The role URLs of the project's own local PostgreSQL (`fleet services up`)."""
    from deploy.services import ADMIN_ROLE, APP_ROLE, INGEST_ROLE, OWNER_ROLE, local_services

    services = local_services()
    return DatabaseSettings(url=services.pg_url(APP_ROLE), owner_url=services.pg_url(OWNER_ROLE),
                            ingest_url=services.pg_url(INGEST_ROLE),
                            admin_url=services.pg_url(ADMIN_ROLE))
