"""Cold archive: hypertable rows of one tenant and UTC day as a Parquet object in Azure Blob.

Object path: ``{tenant slug}/{table}/{yyyy}/{mm}/{dd}/{table}.parquet``. Column types map to
Parquet so that a restore gives identical rows: timestamps as UTC microseconds, uuids and
geography (hex EWKB) and jsonb as text, arrays as lists. `archive_manifest` records the row
count and the SHA-256 of each object; both are checked on read-back before anything is dropped
and again before a restore.

An object keeps the columns its table had when it was written; a restore after a later
migration fills the columns that replaced old ones (`_UPGRADES`) and leaves columns added since
NULL (their defaults, if any), so no archived day becomes unrestorable.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.parquet as pq
from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.blob.aio import BlobServiceClient

from api.jobs.errors import ArchiveError, VerificationError

# PostgreSQL type (information_schema udt_name) ->
#   (SQL cast for export, Arrow type, column type of the restore staging table).
_TYPES: dict[str, tuple[str, pa.DataType, str]] = {
    "timestamptz": ("", pa.timestamp("us", tz="UTC"), "timestamptz"),
    "uuid": ("::text", pa.string(), "text"),
    "int8": ("", pa.int64(), "bigint"),
    "int4": ("", pa.int32(), "integer"),
    "int2": ("", pa.int16(), "smallint"),
    "float4": ("", pa.float32(), "real"),
    "float8": ("", pa.float64(), "double precision"),
    "bool": ("", pa.bool_(), "boolean"),
    "text": ("", pa.string(), "text"),
    "varchar": ("", pa.string(), "text"),
    "bpchar": ("", pa.string(), "text"),
    "geography": ("::text", pa.string(), "text"),
    "jsonb": ("::text", pa.string(), "text"),
    "bytea": ("", pa.binary(), "bytea"),
    "_varchar": ("::text[]", pa.list_(pa.string()), "text[]"),
    "_text": ("", pa.list_(pa.string()), "text[]"),
    "numeric": ("::text", pa.string(), "text"),
}
# Staged text goes back to the column type with this cast (others need none).
_RESTORE_CAST = {"uuid": "::uuid", "geography": "::geography", "jsonb": "::jsonb",
                 "numeric": "::numeric", "_varchar": "::varchar[]"}


@dataclass(frozen=True)
class Column:
    """One column of an archived table."""

    name: str
    udt: str
    nullable: bool = True

    @property
    def export_sql(self) -> str:
        """Select expression giving an Arrow-friendly value."""
        return f'"{self.name}"{_TYPES[self.udt][0]}'

    @property
    def arrow_type(self) -> pa.DataType:
        """Arrow type of the exported value."""
        return _TYPES[self.udt][1]

    @property
    def staging_type(self) -> str:
        """Column type in the restore staging table."""
        return _TYPES[self.udt][2]

    @property
    def shape_check(self) -> str | None:
        """For an array column, SQL giving [column, reason] when its value has a shape a
        Parquet list cannot hold (more than one dimension, a lower bound other than 1)."""
        if not self.udt.startswith("_"):
            return None
        c = f'"{self.name}"'
        return (f"WHEN array_ndims({c}) > 1 THEN ARRAY['{self.name}',"
                f" array_ndims({c}) || '-dimensional array']"
                f" WHEN array_lower({c}, 1) <> 1 THEN ARRAY['{self.name}',"
                f" 'array lower bound ' || array_lower({c}, 1)]")

    @property
    def restore_sql(self) -> str:
        """Expression turning the staged value back into the column's type."""
        return f'"{self.name}"{_RESTORE_CAST.get(self.udt, "")}'


@dataclass(frozen=True)
class Upgrade:
    """A column that older archived objects have and the table no longer has: what it is
    staged as, and the SQL (over the staged column) of each column that replaced it."""

    source: str
    staging_type: str
    targets: Mapping[str, str]


# Per table, the columns that migrations replaced, newest schema last.
_UPGRADES: dict[str, tuple[Upgrade, ...]] = {
    # 0016_compact_position: a geography (archived as hex EWKB) became degrees x 10^7.
    "telemetry": (Upgrade("location", "text", {
        "lat_e7": "round(ST_Y(\"location\"::geography::geometry) * 1e7)::integer",
        "lon_e7": "round(ST_X(\"location\"::geography::geometry) * 1e7)::integer",
    }),),
}


def restore_plan(table: str, columns: Sequence[Column],
                 archived: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """How an object with the `archived` columns goes back into today's `table`: the columns
    to stage (name, type) and, per table column to write, its SQL over the staging table.
    Raises ArchiveError when a NOT NULL column has nothing to come from."""
    present = set(archived)
    stage: dict[str, str] = {}
    select: dict[str, str] = {}
    missing: list[str] = []
    for c in columns:
        if c.name in present:
            stage[c.name] = c.staging_type
            select[c.name] = c.restore_sql
            continue
        upgrade = next((u for u in _UPGRADES.get(table, ())
                        if c.name in u.targets and u.source in present), None)
        if upgrade is not None:
            stage[upgrade.source] = upgrade.staging_type
            select[c.name] = upgrade.targets[c.name]
        elif not c.nullable:
            missing.append(c.name)
        # else: a column added after the object was written; left to its default (or NULL)
    if missing:
        raise ArchiveError(f"archived object lacks columns {missing}")
    return list(stage.items()), select


async def table_columns(conn: asyncpg.Connection, table: str) -> list[Column]:
    """Columns of a table in order; raises ArchiveError for a type the archive cannot hold."""
    rows = await conn.fetch(
        "SELECT column_name, udt_name, is_generated, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position", table)
    if not rows:
        raise ArchiveError(f"table {table!r} does not exist")
    cols = [Column(r["column_name"], r["udt_name"], r["is_nullable"] == "YES")
            for r in rows if r["is_generated"] == "NEVER"]
    unknown = [c for c in cols if c.udt not in _TYPES]
    if unknown:
        raise ArchiveError(f"table {table}: cannot archive column types "
                           f"{[(c.name, c.udt) for c in unknown]}")
    return cols


def blob_path(tenant_slug: str, table: str, day: date) -> str:
    """Where one tenant-day of a table lives: {tenant}/{table}/{yyyy}/{mm}/{dd}/..."""
    return f"{tenant_slug}/{table}/{day:%Y}/{day:%m}/{day:%d}/{table}.parquet"


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime.combine(day, time(0), tzinfo=UTC)
    return start, start + timedelta(days=1)


_ARROW_REFUSES = (pa.ArrowException, TypeError, ValueError, OverflowError)
"""What pyarrow raises for a value its column type cannot hold."""


def _column_array(values: list[Any], kind: pa.DataType) -> tuple[pa.Array | None,
                                                                 dict[int, str]]:
    """An Arrow array of `values`, or (when some cannot be encoded) None and, per index of a
    value Arrow refuses, why."""
    try:
        return pa.array(values, type=kind), {}
    except _ARROW_REFUSES:
        pass
    bad: dict[int, str] = {}
    for i, value in enumerate(values):
        try:
            pa.array([value], type=kind)
        except _ARROW_REFUSES as exc:
            bad[i] = f"{type(exc).__name__}: {exc}"[:500]
    # Each value alone encodes but not all together (e.g. a column past Arrow's size limits):
    # no row to blame, so this tenant-day fails with the cause (export_day).
    if not bad:
        pa.array(values, type=kind)
    return None, bad


def encode_rows(columns: Sequence[Column], records: Sequence[Sequence[Any]]
                ) -> tuple[bytes, int, dict[int, tuple[str, str]]]:
    """Serialise rows (selected with each column's export_sql) to Parquet bytes, leaving out
    rows holding a value Arrow cannot encode. Returns the bytes, the rows in them, and per
    index (into `records`) of a row left out, its first such column and the reason."""
    bad: dict[int, tuple[str, str]] = {}
    arrays: list[pa.Array | None] = []
    for i, c in enumerate(columns):
        array, refused = _column_array([r[i] for r in records], c.arrow_type)
        arrays.append(array)
        for index, reason in refused.items():
            bad.setdefault(index, (c.name, reason))
    rows = records
    if bad:
        rows = [r for i, r in enumerate(records) if i not in bad]
        arrays = [pa.array([r[i] for r in rows], type=c.arrow_type)
                  for i, c in enumerate(columns)]
    table = pa.Table.from_arrays(arrays, schema=pa.schema(
        [pa.field(c.name, c.arrow_type) for c in columns]))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue(), len(rows), bad


def parquet_rows(data: bytes) -> pa.Table:
    """Read Parquet bytes back into an Arrow table."""
    try:
        return pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise VerificationError(f"archived object is not readable Parquet: {exc}") from exc


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()


class BlobArchive:
    """The Azure Blob container of the archive; an async context manager."""

    def __init__(self, connection_string: str, container: str, *, retries: int = 3) -> None:
        if not connection_string:
            raise ArchiveError("jobs.azure_connection_string is not set: no archive configured")
        self._service = BlobServiceClient.from_connection_string(
            connection_string, retry_total=retries)
        self._container = container

    async def __aenter__(self) -> BlobArchive:
        try:
            await self._service.create_container(self._container)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            await self._service.close()
            raise ArchiveError(f"cannot reach the archive container: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._service.close()

    async def put(self, path: str, data: bytes) -> None:
        """Upload (overwrite) one object."""
        try:
            await self._service.get_blob_client(self._container, path).upload_blob(
                data, overwrite=True)
        except AzureError as exc:
            raise ArchiveError(f"upload of {path} failed: {exc}") from exc

    async def get(self, path: str) -> bytes:
        """Download one object."""
        try:
            stream = await self._service.get_blob_client(self._container, path).download_blob()
            data: bytes = await stream.readall()
        except AzureError as exc:
            raise ArchiveError(f"download of {path} failed: {exc}") from exc
        return data

    async def list(self, prefix: str = "") -> list[str]:
        """Object names under a prefix."""
        try:
            container = self._service.get_container_client(self._container)
            return [b.name async for b in container.list_blobs(name_starts_with=prefix)]
        except AzureError as exc:
            raise ArchiveError(f"listing {prefix!r} failed: {exc}") from exc


@dataclass(frozen=True)
class ArchiveReject:
    """A row the archive cannot encode: a dead letter in archive_rejects."""

    key: dict[str, Any]
    """The row's unique key (JSON-friendly values)."""
    column: str
    reason: str
    row_text: str
    """The whole row in PostgreSQL's record text form."""


@dataclass(frozen=True)
class ArchivedDay:
    """What one export wrote (also a row of archive_manifest)."""

    tenant_id: Any
    tenant_slug: str
    table: str
    day: date
    path: str
    rows: int
    """Rows in the object: with late rows merged into an earlier object, more than were read
    from the table this time."""
    sha256: str
    size_bytes: int
    from_table: int = -1
    """Rows read from the table this time (what a drop of the chunk removes, dead letters
    included); -1: `rows`."""
    rejected: tuple[ArchiveReject, ...] = ()
    """Rows of the table left out of the object and written to archive_rejects."""
    new_rejects: int = 0
    """How many of `rejected` were not dead letters already (an earlier run found the rest)."""

    @property
    def live_rows(self) -> int:
        """Rows of the table this export covers."""
        return self.rows if self.from_table < 0 else self.from_table


async def unique_key(conn: asyncpg.Connection, table: str) -> list[str]:
    """The columns of the table's narrowest unique index (a row's identity), or [] when it
    has none."""
    row = await conn.fetchrow(
        "SELECT array_agg(a.attname ORDER BY k.ord) AS cols FROM pg_index i"
        " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE i.indrelid = $1::regclass AND i.indisunique"
        " GROUP BY i.indexrelid ORDER BY count(*) LIMIT 1", f"public.{table}")
    return list(row["cols"]) if row else []


async def _stage(conn: asyncpg.Connection, store: BlobArchive, table: str, *,
                 columns: Sequence[Column], entry: asyncpg.Record, staging: str
                 ) -> dict[str, str]:
    """Download a tenant-day's object, check it against its manifest row (`blob_path`,
    `sha256`, `row_count`), and copy it into the temp table `staging` (dropped at commit).
    Returns, per table column it can fill, the SQL over `staging` (`restore_plan`)."""
    data = await store.get(entry["blob_path"])
    if sha256_hex(data) != entry["sha256"]:
        raise VerificationError(f"{entry['blob_path']}: checksum differs from the manifest")
    arrow = parquet_rows(data)
    if arrow.num_rows != entry["row_count"]:
        raise VerificationError(f"{entry['blob_path']}: row count differs from the manifest")
    try:
        stage, select = restore_plan(table, columns, arrow.column_names)
    except ArchiveError as exc:
        raise ArchiveError(f"{entry['blob_path']}: {exc}") from exc
    names = [name for name, _ in stage]
    await conn.execute(
        f"CREATE TEMP TABLE {staging} ("
        + ", ".join(f'"{name}" {kind}' for name, kind in stage) + ") ON COMMIT DROP")
    await conn.copy_records_to_table(
        staging, columns=names,
        records=list(zip(*(arrow.column(n).to_pylist() for n in names), strict=True)))
    return select


async def _merge_source(conn: asyncpg.Connection, store: BlobArchive, table: str,
                        columns: Sequence[Column], prior: asyncpg.Record) -> str:
    """Stage the tenant-day's archived object in a temp table and return the SQL of its rows
    in today's columns. Raises VerificationError when the object is not what the manifest
    says: it is then never replaced."""
    try:
        select = await _stage(conn, store, table, columns=columns, entry=prior,
                              staging="archive_merge_staging")
    except VerificationError as exc:
        raise VerificationError(f"{exc}; late rows are kept hot rather than written over "
                                "the archived object") from exc
    # Columns added after the object was written are NULL (UNION takes the table's types).
    exprs = [f'{select[c.name]} AS "{c.name}"' if c.name in select else f'NULL AS "{c.name}"'
             for c in columns]
    return (f"SELECT {', '.join(exprs)}, 0 AS _src, NULL::text[] AS _reject,"  # noqa: S608 - catalogue names
            " NULL::text AS _row FROM archive_merge_staging")


async def export_day(conn: asyncpg.Connection, store: BlobArchive, table: str, *,
                     columns: Sequence[Column], tenant_id: Any, tenant_slug: str,
                     day: date) -> ArchivedDay | None:
    """Export, upload and verify one tenant-day; records it in archive_manifest.

    When the day was archived before (late rows arrived after its chunk was dropped), the new
    object is the union of the archived rows and the table's, deduplicated on the table's
    unique key (the archived row wins), and never holds fewer rows than the manifest says the
    old one did; the manifest keeps the old version in `history`.

    A row the object cannot hold as it is (an array of another shape than one dimension from
    1, a value Arrow refuses) is left out and written to archive_rejects with its reason, in
    the transaction that records the manifest; the rest of the day is archived.

    Returns None when the tenant has no rows that day. Raises ArchiveError (or
    VerificationError) when the object cannot be written or does not read back identically.
    """
    try:
        return await _export_day(conn, store, table, columns=columns, tenant_id=tenant_id,
                                 tenant_slug=tenant_slug, day=day)
    except ArchiveError:
        raise
    except (asyncpg.PostgresError, *_ARROW_REFUSES) as exc:
        # The server refused something of this day's (a dead letter's text, the manifest) or
        # Arrow failed on the column as a whole: this tenant-day fails, the run goes on.
        raise ArchiveError(f"{tenant_slug} {table} {day}: {type(exc).__name__}: {exc}"
                           ) from exc


async def _export_day(conn: asyncpg.Connection, store: BlobArchive, table: str, *,
                      columns: Sequence[Column], tenant_id: Any, tenant_slug: str,
                      day: date) -> ArchivedDay | None:
    start, end = day_bounds(day)
    names = ", ".join(f'"{c.name}"' for c in columns)
    checks = " ".join(c.shape_check for c in columns if c.shape_check)
    reject = f"CASE {checks} END" if checks else "NULL::text[]"
    live = (f"SELECT {names}, 1 AS _src, {reject} AS _reject,"  # noqa: S608 - catalogue names
            f" CASE WHEN ({reject}) IS NOT NULL THEN t::text END AS _row FROM {table} t"
            " WHERE tenant_id = $1 AND time >= $2 AND time < $3")
    select = ", ".join(c.export_sql for c in columns)
    key = await unique_key(conn, table) or [c.name for c in columns]
    async with conn.transaction():  # the merge's temp table lives until the end
        prior = await conn.fetchrow(
            "SELECT blob_path, row_count, sha256 FROM archive_manifest WHERE tenant_id = $1"
            " AND table_name = $2 AND day = $3", tenant_id, table, day)
        source = live
        from_table = None
        if prior is not None:
            # Only for a merge: there, the object's rows are not the table's.
            from_table = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE tenant_id = $1 AND time >= $2"  # noqa: S608
                " AND time < $3", tenant_id, start, end)
            if not from_table:
                return None
            archived = await _merge_source(conn, store, table, columns, prior)
            on = ", ".join(f'"{k}"' for k in key)
            source = (f"SELECT DISTINCT ON ({on}) * FROM ({live} UNION ALL {archived}) u"  # noqa: S608
                      f" ORDER BY {on}, _src")
        records = await conn.fetch(
            f"SELECT {select}, _reject, _row FROM ({source}) r"  # noqa: S608
            " ORDER BY time, vehicle_id", tenant_id, start, end)
    if not records:
        return None
    width = len(columns)
    shaped = [r for r in records if r[width] is None]
    data, rows, refused = encode_rows(columns, shaped)
    rejected = [_reject(columns, key, r, column=r[width][0], reason=r[width][1],
                        row_text=r[width + 1]) for r in records if r[width] is not None]
    for index, (column, reason) in sorted(refused.items()):
        row_text = await _row_text(conn, table, columns, key, shaped[index])
        rejected.append(_reject(columns, key, shaped[index], column=column, reason=reason,
                                row_text=row_text))
    if prior is not None and rows < prior["row_count"]:
        raise VerificationError(
            f"{prior['blob_path']}: the merged object would hold {rows} rows, fewer "
            f"than the {prior['row_count']} archived; not replaced")
    digest = sha256_hex(data)
    path = blob_path(tenant_slug, table, day)
    await store.put(path, data)
    back = await store.get(path)
    if sha256_hex(back) != digest:
        raise VerificationError(f"{path}: checksum read back differs from the upload")
    if parquet_rows(back).num_rows != rows:
        raise VerificationError(f"{path}: row count read back differs from the export")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO archive_manifest (tenant_id, table_name, day, blob_path, row_count,"
            " sha256, size_bytes, exported_at, verified_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, now(), now())"
            " ON CONFLICT (tenant_id, table_name, day) DO UPDATE SET"
            " blob_path = EXCLUDED.blob_path, row_count = EXCLUDED.row_count,"
            " sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes, exported_at = now(),"
            " verified_at = now(), dropped_at = NULL, history = archive_manifest.history"
            " || CASE WHEN archive_manifest.sha256 = EXCLUDED.sha256 THEN '[]'::jsonb"
            " ELSE jsonb_build_array(jsonb_build_object('sha256', archive_manifest.sha256,"
            " 'row_count', archive_manifest.row_count, 'exported_at',"
            " archive_manifest.exported_at)) END",
            tenant_id, table, day, path, rows, digest, len(data))
        new_rejects = await _record_rejects(
            conn, table, tenant_id=tenant_id, day=day, rejected=rejected,
            archived=[r for i, r in enumerate(shaped) if i not in refused],
            key_of=lambda r: _key(columns, key, r))
    return ArchivedDay(tenant_id, tenant_slug, table, day, path, rows, digest, len(data),
                       from_table=len(records) if from_table is None else int(from_table),
                       rejected=tuple(rejected), new_rejects=new_rejects)


async def _record_rejects(conn: asyncpg.Connection, table: str, *, tenant_id: Any, day: date,
                          rejected: Sequence[ArchiveReject], archived: Sequence[Sequence[Any]],
                          key_of: Callable[[Sequence[Any]], dict[str, Any]]) -> int:
    """Write a tenant-day's dead letters and drop those whose row is now in the object (fixed
    and written again). Returns how many were not dead letters before (a rerun that finds the
    same rows again only refreshes them)."""
    where = "tenant_id = $1 AND table_name = $2 AND day = $3"
    if await conn.fetchval(f"SELECT count(*) FROM archive_rejects WHERE {where}",  # noqa: S608 - constant
                           tenant_id, table, day):
        await conn.execute(
            f"DELETE FROM archive_rejects WHERE {where} AND row_key = ANY($4::jsonb[])",  # noqa: S608
            tenant_id, table, day, [json.dumps(key_of(r)) for r in archived])
    if not rejected:
        return 0
    keys = [json.dumps(r.key, sort_keys=True) for r in rejected]
    known = await conn.fetchval(
        f"SELECT count(*) FROM archive_rejects WHERE {where} AND row_key = ANY($4::jsonb[])",  # noqa: S608
        tenant_id, table, day, keys)
    await conn.executemany(
        "INSERT INTO archive_rejects (tenant_id, table_name, day, row_key, column_name,"
        " reason, row_text) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)"
        " ON CONFLICT (tenant_id, table_name, day, row_key) DO UPDATE SET"
        " column_name = EXCLUDED.column_name, reason = EXCLUDED.reason,"
        " row_text = EXCLUDED.row_text, rejected_at = now()",
        [(tenant_id, table, day, k, r.column, r.reason, r.row_text)
         for k, r in zip(keys, rejected, strict=True)])
    return len(rejected) - int(known)


def _key(columns: Sequence[Column], key: Sequence[str], record: Sequence[Any]) -> dict[str, Any]:
    """A row's unique key, JSON-friendly (as archive_rejects.row_key holds it)."""
    at = {c.name: i for i, c in enumerate(columns)}
    return {k: _jsonable(record[at[k]]) for k in key}


def _reject(columns: Sequence[Column], key: Sequence[str], record: Sequence[Any], *,
            column: str, reason: str, row_text: str) -> ArchiveReject:
    return ArchiveReject(_key(columns, key, record), column, reason[:500], row_text)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


async def _row_text(conn: asyncpg.Connection, table: str, columns: Sequence[Column],
                    key: Sequence[str], record: Sequence[Any]) -> str:
    """The record text of the table row an exported `record` came from (found by its key)."""
    at = {c.name: (i, c) for i, c in enumerate(columns)}
    values = [record[at[k][0]] for k in key]
    # `=` where it can (a key's time column then narrows the scan to one chunk).
    params = [v for v in values if v is not None]
    conditions, n = [], 0
    for k, v in zip(key, values, strict=True):
        if v is None:
            conditions.append(f"{at[k][1].export_sql} IS NULL")
        else:
            n += 1
            conditions.append(f"{at[k][1].export_sql} = ${n}")
    where = " AND ".join(conditions)
    text: str | None = await conn.fetchval(
        f"SELECT t::text FROM {table} t WHERE {where} LIMIT 1",  # noqa: S608 - catalogue names
        *params)
    # Not found: a merged row from the archived object (Arrow read it, so it is encodable;
    # kept as a guard) or a row deleted since the export.
    return text if text is not None else repr(tuple(record[: len(columns)]))


@dataclass(frozen=True)
class TenantRestore:
    """What a restore did for one tenant's object of the day."""

    tenant: str
    path: str
    rows: int
    """Rows the manifest says the object holds."""
    restored: int = 0
    """Rows inserted; the rest of `rows` were already in the table (skipped)."""
    error: str | None = None
    """Why nothing of this object was restored (it is then left as it is)."""
    dead_letters: int = 0
    """Rows of this tenant-day in archive_rejects: never in the object, not restored."""

    @property
    def skipped(self) -> int:
        """Rows of the object already present."""
        return 0 if self.error else self.rows - self.restored


async def restore_report(conn: asyncpg.Connection, store: BlobArchive, day: date, *,
                         table: str = "telemetry", tenant_slug: str | None = None
                         ) -> list[TenantRestore]:
    """Bring archived rows of a day back into the hypertable, tenant by tenant; a damaged or
    unreadable object is reported and the others still restored.

    Each object is verified against the manifest (checksum, row count) first, and restored in
    a transaction of its own. Rows already present are left alone (ON CONFLICT DO NOTHING),
    so a restore can be repeated. Raises ArchiveError only when nothing was archived.
    """
    manifest = await conn.fetch(
        "SELECT m.tenant_id, t.slug, m.blob_path, m.row_count, m.sha256 FROM archive_manifest m"
        " JOIN tenants t ON t.id = m.tenant_id WHERE m.table_name = $1 AND m.day = $2"
        " AND ($3::text IS NULL OR t.slug = $3) ORDER BY t.slug", table, day, tenant_slug)
    if not manifest:
        raise ArchiveError(f"no archived {table} for {day}"
                           + (f" and tenant {tenant_slug}" if tenant_slug else ""))
    columns = await table_columns(conn, table)
    dead = dict(await conn.fetch(
        "SELECT tenant_id, count(*) FROM archive_rejects WHERE table_name = $1 AND day = $2"
        " GROUP BY tenant_id", table, day))
    out: list[TenantRestore] = []
    for entry in manifest:
        found = TenantRestore(entry["slug"], entry["blob_path"], entry["row_count"],
                              dead_letters=dead.get(entry["tenant_id"], 0))
        try:
            restored = await _restore_one(conn, store, table, day=day, columns=columns,
                                          entry=entry)
        except ArchiveError as exc:
            out.append(replace(found, error=str(exc)))
        else:
            out.append(replace(found, restored=restored))
    return out


async def restore_day(conn: asyncpg.Connection, store: BlobArchive, day: date, *,
                      table: str = "telemetry", tenant_slug: str | None = None) -> dict[str, int]:
    """`restore_report`, as rows restored per tenant; raises VerificationError (after the
    other tenants were restored) naming every object that could not be."""
    report = await restore_report(conn, store, day, table=table, tenant_slug=tenant_slug)
    failed = [r for r in report if r.error]
    if failed:
        done = ", ".join(f"{r.tenant} ({r.restored} rows)" for r in report if not r.error)
        raise VerificationError("; ".join(f"{r.tenant}: {r.error}" for r in failed)
                                + f"; restored: {done or 'none'}")
    return {r.tenant: r.restored for r in report}


async def _restore_one(conn: asyncpg.Connection, store: BlobArchive, table: str, *, day: date,
                       columns: Sequence[Column], entry: asyncpg.Record) -> int:
    async with conn.transaction():
        select = await _stage(conn, store, table, columns=columns, entry=entry,
                              staging="archive_restore_staging")
        status = await conn.execute(
            f"INSERT INTO {table} ({', '.join(chr(34) + n + chr(34) for n in select)})"  # noqa: S608
            f" SELECT {', '.join(select.values())} FROM archive_restore_staging"
            " ON CONFLICT DO NOTHING")
        await conn.execute("UPDATE archive_manifest SET restored_at = now()"
                           " WHERE tenant_id = $1 AND table_name = $2 AND day = $3",
                           entry["tenant_id"], table, day)
    return int(status.split()[-1])
