"""TimescaleDB editions: the installed build has `tsl/`, one build serves both licences, and the
install script checks the source tarball's hash.

The clusters here are throwaway ones (own state folder, own port), started through
`deploy.services` exactly as `fleet services up` starts the project's; the shared one is never
touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from psycopg import sql

from core.errors import SettingsError
from core.ports import free_port
from core.settings import load_settings
from deploy.errors import ServiceError
from deploy.services import (
    ADMIN_ROLE,
    LocalServices,
    ServicesProcessSettings,
    ServicesSettings,
)

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "install" / "timescaledb.sh"
PG_CONFIG = "/usr/lib/postgresql/15/bin/pg_config"
VENDOR_SHA256 = "70f0807d121cd9ec3828d3e8bed7ea0cdff47f50fab090406e22f49e4ced6cef"

License = Literal["apache", "timescale"]
Cluster = Callable[[License], LocalServices]


def run_script(*args: str, source: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if source is not None:
        env["FLEET_TIMESCALEDB_SOURCE"] = str(source)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def tsl_library() -> Path:
    """The tsl module of the installed default version (which may be missing)."""
    def pg_config(flag: str) -> Path:
        out = subprocess.run([PG_CONFIG, flag], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())

    control = (pg_config("--sharedir") / "extension" / "timescaledb.control").read_text()
    match = re.search(r"default_version\s*=\s*'([^']+)'", control)
    assert match, control
    return pg_config("--pkglibdir") / f"timescaledb-tsl-{match.group(1)}.so"


@pytest.fixture(scope="module")
def full_build() -> None:
    """Skip only where the fallback Apache-only build is installed because the tarball is absent."""
    tsl = tsl_library()
    if tsl.exists():
        return
    check = run_script("--check-only")
    if "falling back" in check.stderr:
        pytest.skip(f"no {tsl.name}: the Apache-only fallback build is installed because the "
                    f"full source is absent ({check.stderr.strip()})")
    pytest.fail(f"{tsl} is missing although the full source is there: run "
                f"`sudo bash deploy/install/timescaledb.sh`\n{check.stdout}{check.stderr}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A throwaway PostgreSQL cluster; `cluster(licence)` brings it up with that licence."""
    state = tmp_path_factory.mktemp("editions") / "state"
    port = free_port()
    stacks: list[LocalServices] = []

    def up(license_: License) -> LocalServices:
        settings = ServicesSettings(state_dir=str(state), postgres_port=port,
                                    postgres_shared_buffers_mb=32, timescaledb_license=license_)
        stack = LocalServices(settings, log=lambda _m: None)
        stack.postgres_up()
        stacks.append(stack)
        return stack

    yield up
    if stacks:
        stacks[-1].postgres_down()
        if stacks[-1].state != stacks[-1].project_state:
            shutil.rmtree(stacks[-1].state, ignore_errors=True)


def fresh_database(stack: LocalServices) -> str:
    """A new database with `CREATE EXTENSION timescaledb` run in it; returns its admin URL."""
    name = f"editions_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.pg_url(ADMIN_ROLE, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = stack.pg_url(ADMIN_ROLE, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION timescaledb")
        conn.execute("CREATE TABLE t (ts timestamptz NOT NULL, vehicle int NOT NULL, v float8)")
        conn.execute("SELECT create_hypertable('t', by_range('ts', INTERVAL '1 day'))")
        conn.execute("INSERT INTO t SELECT TIMESTAMPTZ '2024-01-01' + i * INTERVAL '1 minute', "
                     "i % 10, i FROM generate_series(0, 2999) i")
    return url


def show_license(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW timescaledb.license").fetchone()
    assert row is not None
    return str(row[0])


def postmaster_started(stack: LocalServices) -> object:
    with psycopg.connect(stack.pg_url(ADMIN_ROLE, "postgres")) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def test_installed_build_has_the_tsl_module(full_build: None) -> None:
    assert tsl_library().is_file()


def test_timescale_licence_compresses_chunks(full_build: None, cluster: Cluster) -> None:
    url = fresh_database(cluster("timescale"))
    assert show_license(url) == "timescale"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE t SET (timescaledb.compress, "
                     "timescaledb.compress_segmentby = 'vehicle', "
                     "timescaledb.compress_orderby = 'ts')")
        chunks = [r[0] for r in conn.execute("SELECT show_chunks('t')").fetchall()]
        assert len(chunks) == 3
        for chunk in chunks:
            conn.execute("SELECT compress_chunk(%s::regclass)", (chunk,))
        compressed = conn.execute(
            "SELECT count(*) FROM chunk_compression_stats('t') "
            "WHERE compression_status = 'Compressed'").fetchone()
        rows = conn.execute("SELECT count(*), sum(v) FROM t").fetchone()
    assert compressed == (3,)
    assert rows == (3000, sum(range(3000)))


def test_apache_licence_refuses_compression(cluster: Cluster) -> None:
    url = fresh_database(cluster("apache"))
    assert show_license(url) == "apache"
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match='"apache" license'):
            conn.execute("ALTER TABLE t SET (timescaledb.compress)")
        chunk = conn.execute("SELECT show_chunks('t') LIMIT 1").fetchone()
        assert chunk is not None
        with pytest.raises(psycopg.errors.FeatureNotSupported, match='"apache" license'):
            conn.execute("SELECT compress_chunk(%s::regclass)", (chunk[0],))


def test_up_restarts_postgres_only_when_the_licence_changes(
        full_build: None, cluster: Cluster) -> None:
    started = postmaster_started(cluster("apache"))
    assert postmaster_started(cluster("apache")) == started
    stack = cluster("timescale")
    assert postmaster_started(stack) != started
    assert show_license(stack.pg_url(ADMIN_ROLE)) == "timescale"


def test_licence_setting_defaults_to_timescale_and_takes_only_the_two_editions() -> None:
    assert ServicesSettings().timescaledb_license == "timescale"
    conf = LocalServices(ServicesSettings()).postgres._pg_conf()
    assert "timescaledb.license = 'timescale'" in conf

    def load(value: str) -> ServicesSettings:
        environ = {"FLEET_SERVICES_TIMESCALEDB_LICENSE": value}
        return load_settings(ServicesProcessSettings, environ=environ, local_file=None).services

    assert load("timescale").timescaledb_license == "timescale"
    with pytest.raises(SettingsError, match="timescaledb_license"):
        load("enterprise")


@pytest.mark.parametrize("args", [["--check-only"], []], ids=["check-only", "install"])
def test_script_refuses_a_tarball_with_a_wrong_hash(tmp_path: Path, args: list[str]) -> None:
    # The hash is checked before anything else, so even the installing mode stops right there.
    fake = tmp_path / "timescaledb-2.19.3.tar.gz"
    fake.write_bytes(b"not the release")
    out = run_script(*args, source=fake)
    assert out.returncode == 1, out
    assert "REFUSED" in out.stderr, out.stderr
    assert f"expected {VENDOR_SHA256}" in out.stderr
    assert "building" not in out.stdout


def test_script_accepts_the_vendored_tarball() -> None:
    source = REPO.parent / "shared" / "vendor" / "timescaledb-2.19.3.tar.gz"
    if not source.exists():
        pytest.skip(f"{source} is absent")
    out = run_script("--check-only", source=source)
    assert out.returncode == 0, out
    assert "sha256 ok, version 2.19.3, tsl/ included" in out.stdout


def test_script_falls_back_to_the_apache_edition_without_the_tarball(tmp_path: Path) -> None:
    out = run_script("--check-only", source=tmp_path / "absent.tar.gz")
    assert out.returncode == 0, out
    assert "falling back" in out.stderr
    assert "Apache edition only" in out.stderr


def test_timescale_licence_without_the_full_build_is_a_clear_error(tmp_path: Path) -> None:
    """An Apache-only build (no tsl module) cannot serve the default licence: `up` says what
    to do instead of PostgreSQL failing to start with a library error."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "timescaledb-2.19.3.so").touch()
    settings = ServicesSettings(postgres_bin_dir=str(tmp_path / "bin"),
                                state_dir=str(tmp_path / "state"))
    with pytest.raises(ServiceError, match="FLEET_SERVICES_TIMESCALEDB_LICENSE=apache"):
        LocalServices(settings).postgres_up()
    apache = ServicesSettings(postgres_bin_dir=str(tmp_path / "bin"),
                              state_dir=str(tmp_path / "state"), timescaledb_license="apache")
    LocalServices(apache).postgres._check_edition_installed()  # the Apache edition needs no tsl
