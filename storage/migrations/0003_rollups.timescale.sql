-- Rollups of the Timescale-licence edition: created by 0014_rollups_and_compression.timescale
-- once 0012 has moved tenancy off row-level security, which TimescaleDB refuses next to
-- continuous aggregates and compression ("cannot create continuous aggregate on hypertable
-- with row security"). This file used to create them here and so never applied on this
-- edition (issue #21): no database holds its earlier text.
SELECT 1;
