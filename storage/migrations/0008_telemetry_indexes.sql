-- Fewer indexes on telemetry, the table every sample is written to: each index is maintained
-- for every row, and they were a large part of the server's COPY cost (see
-- docs/benchmarks.md, ingest). The idempotency key now leads with (vehicle_id, time), so the
-- same index also answers "one vehicle over a time range" (the track, the rollups of one
-- vehicle), and the separate (vehicle_id, time DESC) index goes. B-trees are read in either
-- direction, so newest-first queries use it too. Uniqueness is unchanged (same columns).
-- Kept: (tenant_id, time DESC) for every tenant-scoped query (row-level security always adds
-- the tenant) and TimescaleDB's (time DESC) for the rollup refresh of a time range.

CREATE UNIQUE INDEX idx_telemetry_vehicle_time_seq ON telemetry (vehicle_id, time DESC, seq);
DROP INDEX idx_telemetry_idempotency;
DROP INDEX idx_telemetry_vehicle_time;
COMMENT ON INDEX idx_telemetry_vehicle_time_seq IS 'Idempotency key (a redelivered sample is skipped) and the per-vehicle time-range index.';
