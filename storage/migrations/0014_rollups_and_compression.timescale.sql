-- The Timescale-licence edition: continuous aggregates for the rollups, compression of closed
-- chunks, and retention as policies (issue #21). Names and columns are the Apache edition's
-- (0003_rollups.apache, 0009_hourly_from_minutes.apache), so analysts' queries run on both.
-- Possible only since 0012: TimescaleDB refuses both features on a table with row security.

-- Per-minute rollup from the raw rows. Real-time aggregation: buckets newer than the last
-- refresh are computed from `telemetry` at query time, so a reader never waits for a policy.
CREATE MATERIALIZED VIEW telemetry_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tenant_id, vehicle_id,
       count(*)::integer AS samples, avg(speed_kph)::real AS avg_speed_kph,
       max(speed_kph) AS max_speed_kph, avg(rpm)::real AS avg_rpm,
       max(coolant_temp_c) AS max_coolant_temp_c, min(fuel_level_pct) AS min_fuel_level_pct,
       last(fuel_level_pct, time) AS last_fuel_level_pct, min(odometer_km) AS min_odometer_km,
       max(odometer_km) AS max_odometer_km, max(engine_hours_h) AS max_engine_hours_h,
       min(battery_voltage_v) AS min_battery_voltage_v, last(location, time) AS last_location,
       sum(speed_kph::double precision) AS sum_speed_kph,
       count(speed_kph)::integer AS speed_samples, sum(rpm::double precision) AS sum_rpm,
       count(rpm)::integer AS rpm_samples, max(rpm) AS max_rpm,
       -- Seconds: "ELSE interval_s * 0" makes a bucket whose time was observed but never in
       -- that state 0, and one with no observed time (interval_s NULL throughout) NULL.
       sum(distance_m::double precision) / 1000 AS distance_km,
       sum(CASE WHEN coalesce(rpm > 0, ignition) THEN interval_s ELSE interval_s * 0 END) AS engine_on_s,
       sum(CASE WHEN coalesce(rpm > 0, ignition) AND coalesce(speed_kph, 0) < 2 THEN interval_s ELSE interval_s * 0 END) AS idle_s,
       sum(CASE WHEN over_speed THEN interval_s ELSE interval_s * 0 END) AS over_speed_s,
       sum(CASE WHEN over_rpm THEN interval_s ELSE interval_s * 0 END) AS over_rpm_s,
       sum(fuel_used_pct) AS fuel_used_pct
  FROM telemetry
 GROUP BY 1, 2, 3
WITH NO DATA;

-- Per-hour rollup from the minutes (a hierarchical aggregate: at most 60 rows per vehicle
-- and hour are read, never the raw hour). Averages stay exact through the sums and counts.
CREATE MATERIALIZED VIEW telemetry_1h
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, tenant_id, vehicle_id,
       sum(samples)::integer AS samples,
       (sum(sum_speed_kph) / nullif(sum(speed_samples), 0))::real AS avg_speed_kph,
       max(max_speed_kph) AS max_speed_kph,
       (sum(sum_rpm) / nullif(sum(rpm_samples), 0))::real AS avg_rpm,
       max(max_coolant_temp_c) AS max_coolant_temp_c,
       min(min_fuel_level_pct) AS min_fuel_level_pct,
       last(last_fuel_level_pct, bucket) AS last_fuel_level_pct,
       min(min_odometer_km) AS min_odometer_km, max(max_odometer_km) AS max_odometer_km,
       max(max_engine_hours_h) AS max_engine_hours_h,
       min(min_battery_voltage_v) AS min_battery_voltage_v,
       last(last_location, bucket) AS last_location, sum(sum_speed_kph) AS sum_speed_kph,
       sum(speed_samples)::integer AS speed_samples, sum(sum_rpm) AS sum_rpm,
       sum(rpm_samples)::integer AS rpm_samples, max(max_rpm) AS max_rpm,
       sum(distance_km) AS distance_km, sum(engine_on_s) AS engine_on_s,
       sum(idle_s) AS idle_s, sum(over_speed_s) AS over_speed_s,
       sum(over_rpm_s) AS over_rpm_s, sum(fuel_used_pct) AS fuel_used_pct
  FROM telemetry_1m
 GROUP BY 1, 2, 3
WITH NO DATA;

COMMENT ON VIEW telemetry_1m IS 'Per-vehicle one-minute aggregates of telemetry.';
COMMENT ON VIEW telemetry_1h IS 'Per-vehicle one-hour aggregates of telemetry (columns as telemetry_1m).';
-- The same comments as the Apache edition's tables (docs/schema.md is one document for both).
COMMENT ON COLUMN telemetry_1m.bucket IS 'Start of the bucket (time_bucket).';
COMMENT ON COLUMN telemetry_1m.samples IS 'Number of telemetry rows in the bucket.';
COMMENT ON COLUMN telemetry_1m.avg_speed_kph IS 'Mean ground speed, km/h.';
COMMENT ON COLUMN telemetry_1m.max_speed_kph IS 'Highest ground speed, km/h.';
COMMENT ON COLUMN telemetry_1m.avg_rpm IS 'Mean engine speed, rev/min.';
COMMENT ON COLUMN telemetry_1m.max_coolant_temp_c IS 'Highest coolant temperature, degC.';
COMMENT ON COLUMN telemetry_1m.min_fuel_level_pct IS 'Lowest fuel level, % of tank.';
COMMENT ON COLUMN telemetry_1m.last_fuel_level_pct IS 'Fuel level of the newest sample, % of tank.';
COMMENT ON COLUMN telemetry_1m.min_odometer_km IS 'Lowest odometer, km (distance = max - min).';
COMMENT ON COLUMN telemetry_1m.max_odometer_km IS 'Highest odometer, km.';
COMMENT ON COLUMN telemetry_1m.max_engine_hours_h IS 'Highest engine hours, h.';
COMMENT ON COLUMN telemetry_1m.min_battery_voltage_v IS 'Lowest battery voltage, V.';
COMMENT ON COLUMN telemetry_1m.last_location IS 'Position of the newest sample (NULL when it had no fix).';
COMMENT ON COLUMN telemetry_1m.sum_speed_kph IS 'Sum of the non-NULL speeds, km/h (avg_speed_kph = this / speed_samples).';
COMMENT ON COLUMN telemetry_1m.speed_samples IS 'Rows with a speed.';
COMMENT ON COLUMN telemetry_1m.sum_rpm IS 'Sum of the non-NULL engine speeds, rev/min.';
COMMENT ON COLUMN telemetry_1m.rpm_samples IS 'Rows with an engine speed.';
COMMENT ON COLUMN telemetry_1h.bucket IS 'Start of the bucket (time_bucket).';
COMMENT ON COLUMN telemetry_1h.samples IS 'Number of telemetry rows in the bucket.';
COMMENT ON COLUMN telemetry_1h.avg_speed_kph IS 'Mean ground speed, km/h.';
COMMENT ON COLUMN telemetry_1h.max_speed_kph IS 'Highest ground speed, km/h.';
COMMENT ON COLUMN telemetry_1h.avg_rpm IS 'Mean engine speed, rev/min.';
COMMENT ON COLUMN telemetry_1h.max_coolant_temp_c IS 'Highest coolant temperature, degC.';
COMMENT ON COLUMN telemetry_1h.min_fuel_level_pct IS 'Lowest fuel level, % of tank.';
COMMENT ON COLUMN telemetry_1h.last_fuel_level_pct IS 'Fuel level of the newest sample, % of tank.';
COMMENT ON COLUMN telemetry_1h.min_odometer_km IS 'Lowest odometer, km (distance = max - min).';
COMMENT ON COLUMN telemetry_1h.max_odometer_km IS 'Highest odometer, km.';
COMMENT ON COLUMN telemetry_1h.max_engine_hours_h IS 'Highest engine hours, h.';
COMMENT ON COLUMN telemetry_1h.min_battery_voltage_v IS 'Lowest battery voltage, V.';
COMMENT ON COLUMN telemetry_1h.last_location IS 'Position of the newest sample (NULL when it had no fix).';
COMMENT ON COLUMN telemetry_1h.sum_speed_kph IS 'Sum of the non-NULL speeds, km/h (avg_speed_kph = this / speed_samples).';
COMMENT ON COLUMN telemetry_1h.speed_samples IS 'Rows with a speed.';
COMMENT ON COLUMN telemetry_1h.sum_rpm IS 'Sum of the non-NULL engine speeds, rev/min.';
COMMENT ON COLUMN telemetry_1h.rpm_samples IS 'Rows with an engine speed.';

-- The refresh window reaches as far back as the stream accepts samples (stream.max_past_s,
-- 30 days) and the archive keeps chunks hot (jobs.hot_days, 30): a late row anywhere in it is
-- in the aggregates after the next run, however it arrived. A run materialises only the
-- buckets that new rows invalidated, so the long window costs little when nothing is late.
-- Older rows (written by hand, or restored from the archive) need `fleet db refresh-rollups`.
SELECT add_continuous_aggregate_policy('telemetry_1m', start_offset => INTERVAL '30 days',
  end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('telemetry_1h', start_offset => INTERVAL '30 days',
  end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');

-- Refreshes the rollups of every bucket overlapping [p_from, p_to), minutes first, then the
-- hours built from them. A procedure, not a function: a refresh commits as it goes, so it
-- must be CALLed outside a transaction block. It needs the aggregates' owner, so the stream
-- (the ingest role) leaves this edition's rollups to the policies above. `p_vehicles` is
-- accepted for the Apache edition's signature; a continuous aggregate refreshes all vehicles.
CREATE PROCEDURE fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
                                       p_vehicles uuid[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
  lo timestamptz := time_bucket(INTERVAL '1 hour', p_from);
  hi timestamptz := time_bucket(INTERVAL '1 hour', p_to) + INTERVAL '1 hour';
BEGIN
  CALL refresh_continuous_aggregate('telemetry_1m', lo, hi);
  CALL refresh_continuous_aggregate('telemetry_1h', lo, hi);
END
$$;
COMMENT ON PROCEDURE fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) IS
  'Refresh telemetry_1m, then telemetry_1h, for the buckets overlapping [from, to) (CALL outside a transaction, as the owner).';
REVOKE ALL ON PROCEDURE fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) FROM PUBLIC;

-- Readers get the aggregates through tenant views like every other time-series relation (the
-- materialisations live in _timescaledb_internal and take the aggregates' grants: none).
SELECT fleet_tenant_view('telemetry_1m');
SELECT fleet_tenant_view('telemetry_1h');

-- Compression of closed chunks. Segments are one vehicle's rows (tenant_id rides along: one
-- vehicle has one tenant, so it costs nothing and tenant filters skip whole segments), in
-- time order, so a vehicle's track decompresses as one run and deltas between neighbouring
-- samples are small. A chunk is one day; after two more it is closed for all but late rows,
-- which TimescaleDB still stores (in the chunk's uncompressed part until the next policy run).
ALTER TABLE telemetry SET (timescaledb.compress,
  timescaledb.compress_segmentby = 'tenant_id, vehicle_id',
  timescaledb.compress_orderby = 'time DESC, seq DESC');
SELECT add_compression_policy('telemetry', compress_after => INTERVAL '2 days');

-- The event tables are smaller but kept as long; their chunks are a week.
ALTER TABLE vehicle_events SET (timescaledb.compress,
  timescaledb.compress_segmentby = 'tenant_id, vehicle_id', timescaledb.compress_orderby = 'time DESC');
SELECT add_compression_policy('vehicle_events', compress_after => INTERVAL '14 days');
ALTER TABLE geofence_events SET (timescaledb.compress,
  timescaledb.compress_segmentby = 'tenant_id, vehicle_id', timescaledb.compress_orderby = 'time DESC');
SELECT add_compression_policy('geofence_events', compress_after => INTERVAL '14 days');
ALTER TABLE anomalies SET (timescaledb.compress,
  timescaledb.compress_segmentby = 'tenant_id, vehicle_id', timescaledb.compress_orderby = 'time DESC');
SELECT add_compression_policy('anomalies', compress_after => INTERVAL '14 days');

-- The minute rollup is compressed once it is past the refresh window.
ALTER MATERIALIZED VIEW telemetry_1m SET (timescaledb.compress = true);
SELECT add_compression_policy('telemetry_1m', compress_after => INTERVAL '45 days');

-- Retention as policies on this edition (the Apache edition's retention job does the same):
-- dead letters for 30 days, minute rollups for 400 days. Raw telemetry has none on purpose:
-- the archive job drops a chunk only after its export is verified.
SELECT add_retention_policy('ingest_rejects', drop_after => INTERVAL '30 days');
SELECT add_retention_policy('telemetry_1m', drop_after => INTERVAL '400 days');
