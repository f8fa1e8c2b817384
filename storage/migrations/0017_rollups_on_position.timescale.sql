-- The Timescale-licence edition's continuous aggregates rebuilt on the integer position of
-- 0016 (a continuous aggregate's query cannot be altered), then the geography column dropped.
-- Definitions, policies, compression, retention, comments and tenant views are 0014's; only
-- `last_location` is now computed with fleet_position(). `storage.migrate` refreshes the
-- rebuilt aggregates over all stored telemetry right after this file (a refresh cannot run
-- inside the migration's transaction); until it has, real-time aggregation answers from the
-- raw rows.

-- The aggregates' background jobs go first, by id, before this transaction locks any
-- relation: a running job holds its job lock and then locks the aggregate, while dropping
-- the aggregate (or remove_*_policy, which resolves it first) locks the aggregate and then
-- waits for the job lock: a deadlock, seen with policies that had just started.
SELECT delete_job(j.job_id)
  FROM timescaledb_information.continuous_aggregates ca
  JOIN timescaledb_information.jobs j
    ON (j.hypertable_schema, j.hypertable_name)
     = (ca.materialization_hypertable_schema, ca.materialization_hypertable_name)
 WHERE ca.view_schema = 'public' AND ca.view_name IN ('telemetry_1m', 'telemetry_1h');

-- Rollups whose raw rows are gone (archived days) could not be rebuilt: refuse rather than
-- lose them. The minute rollup keeps 400 days and the archive drops raw days after 30, so
-- this only happens on a database that ran the edition's aggregates for over a month.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM telemetry_1m
              WHERE bucket < (SELECT time_bucket(INTERVAL '1 minute', min(time)) FROM telemetry)) THEN
    RAISE EXCEPTION 'telemetry_1m holds minutes older than the oldest raw telemetry row; restore those days from the archive (fleet archive restore) before migrating, or they would be lost';
  END IF;
END $$;

CREATE TEMP TABLE rollup_comments ON COMMIT DROP AS
SELECT c.relname::text AS rel, a.attname::text AS col, col_description(c.oid, a.attnum) AS text
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.oid IN ('telemetry_1m'::regclass, 'telemetry_1h'::regclass)
   AND col_description(c.oid, a.attnum) IS NOT NULL;

DROP VIEW tenant.telemetry_1h, tenant.telemetry_1m;
DROP MATERIALIZED VIEW telemetry_1h;
DROP MATERIALIZED VIEW telemetry_1m;

CREATE MATERIALIZED VIEW telemetry_1m
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tenant_id, vehicle_id,
       count(*)::integer AS samples, avg(speed_kph)::real AS avg_speed_kph,
       max(speed_kph) AS max_speed_kph, avg(rpm)::real AS avg_rpm,
       max(coolant_temp_c) AS max_coolant_temp_c, min(fuel_level_pct) AS min_fuel_level_pct,
       last(fuel_level_pct, time) AS last_fuel_level_pct, min(odometer_km) AS min_odometer_km,
       max(odometer_km) AS max_odometer_km, max(engine_hours_h) AS max_engine_hours_h,
       min(battery_voltage_v) AS min_battery_voltage_v, last(fleet_position(lat_e7, lon_e7), time) AS last_location,
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
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM rollup_comments LOOP
    EXECUTE format('COMMENT ON COLUMN %I.%I IS %L', r.rel, r.col, r.text);
  END LOOP;
END $$;

SELECT add_continuous_aggregate_policy('telemetry_1m', start_offset => INTERVAL '30 days',
  end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('telemetry_1h', start_offset => INTERVAL '30 days',
  end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '5 minutes');

ALTER MATERIALIZED VIEW telemetry_1m SET (timescaledb.compress = true);
SELECT add_compression_policy('telemetry_1m', compress_after => INTERVAL '45 days');
SELECT add_retention_policy('telemetry_1m', drop_after => INTERVAL '400 days');

SELECT fleet_tenant_view('telemetry_1m');
SELECT fleet_tenant_view('telemetry_1h');

ALTER TABLE telemetry DROP COLUMN location;
