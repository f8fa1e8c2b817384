-- Rollups for the Apache-2 edition of TimescaleDB, which has no continuous aggregates:
-- plain hypertables maintained by fleet_refresh_rollups(), which the stream and the job
-- scheduler call for recently written time ranges. Same names and columns as the
-- licensed edition's continuous aggregates, so analysts' queries work on both.

CREATE TABLE telemetry_1m (
  bucket                timestamptz NOT NULL,
  tenant_id             uuid NOT NULL,
  vehicle_id            uuid NOT NULL,
  samples               integer NOT NULL,
  avg_speed_kph         real,
  max_speed_kph         real,
  avg_rpm               real,
  max_coolant_temp_c    real,
  min_fuel_level_pct    real,
  last_fuel_level_pct   real,
  min_odometer_km       double precision,
  max_odometer_km       double precision,
  max_engine_hours_h    double precision,
  min_battery_voltage_v real,
  last_location         geography(Point, 4326),
  PRIMARY KEY (vehicle_id, bucket)
);
SELECT create_hypertable('telemetry_1m', by_range('bucket', INTERVAL '7 days'));
COMMENT ON TABLE telemetry_1m IS 'Per-vehicle one-minute aggregates of telemetry.';
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
CREATE INDEX idx_telemetry_1m_tenant_bucket ON telemetry_1m (tenant_id, bucket DESC);

CREATE TABLE telemetry_1h (LIKE telemetry_1m INCLUDING ALL);
SELECT create_hypertable('telemetry_1h', by_range('bucket', INTERVAL '30 days'));
COMMENT ON TABLE telemetry_1h IS 'Per-vehicle one-hour aggregates of telemetry (columns as telemetry_1m).';
CREATE INDEX idx_telemetry_1h_tenant_bucket ON telemetry_1h (tenant_id, bucket DESC);

-- Recomputes every bucket that overlaps [p_from, p_to) from the raw telemetry; idempotent.
-- SECURITY DEFINER: it aggregates every tenant, whoever calls it (the stream or a job).
CREATE FUNCTION fleet_refresh_rollups(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  width interval;
  target text;
  n integer := 0;
  affected integer;
BEGIN
  FOR target, width IN VALUES ('telemetry_1m', INTERVAL '1 minute'), ('telemetry_1h', INTERVAL '1 hour') LOOP
    EXECUTE format($q$
      INSERT INTO %I AS r
      SELECT time_bucket($3, time) AS bucket, tenant_id, vehicle_id, count(*)::integer,
             avg(speed_kph)::real, max(speed_kph), avg(rpm)::real, max(coolant_temp_c),
             min(fuel_level_pct), last(fuel_level_pct, time), min(odometer_km), max(odometer_km),
             max(engine_hours_h), min(battery_voltage_v), last(location, time)
        FROM telemetry
       WHERE time >= time_bucket($3, $1) AND time < time_bucket($3, $2) + $3
       GROUP BY 1, 2, 3
      ON CONFLICT (vehicle_id, bucket) DO UPDATE SET
        samples = EXCLUDED.samples, avg_speed_kph = EXCLUDED.avg_speed_kph,
        max_speed_kph = EXCLUDED.max_speed_kph, avg_rpm = EXCLUDED.avg_rpm,
        max_coolant_temp_c = EXCLUDED.max_coolant_temp_c,
        min_fuel_level_pct = EXCLUDED.min_fuel_level_pct,
        last_fuel_level_pct = EXCLUDED.last_fuel_level_pct,
        min_odometer_km = EXCLUDED.min_odometer_km, max_odometer_km = EXCLUDED.max_odometer_km,
        max_engine_hours_h = EXCLUDED.max_engine_hours_h,
        min_battery_voltage_v = EXCLUDED.min_battery_voltage_v,
        last_location = EXCLUDED.last_location
    $q$, target) USING p_from, p_to, width;
    GET DIAGNOSTICS affected = ROW_COUNT;
    n := n + affected;
  END LOOP;
  RETURN n;
END
$$;
COMMENT ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz) IS
  'Recompute telemetry_1m and telemetry_1h for the buckets overlapping [from, to). Returns rows written.';

SELECT fleet_enable_tenant_rls('telemetry_1m', false);
SELECT fleet_enable_tenant_rls('telemetry_1h', false);
GRANT SELECT ON telemetry_1m, telemetry_1h TO fleet_app, fleet_ingest;
REVOKE ALL ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz) TO fleet_ingest;
