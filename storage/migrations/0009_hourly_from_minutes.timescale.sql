-- The Apache edition's rollup tables change here; this edition's continuous aggregates are
-- created whole by 0014_rollups_and_compression.timescale (see 0003_rollups.timescale).
SELECT 1;
