-- The hourly rollup is computed from the minute rollup instead of raw telemetry.
--
-- fleet_refresh_rollups() recomputes every bucket that overlaps the range it is given, and
-- the stream calls it every minute for what it just wrote: so each call re-read the whole
-- current hour of raw telemetry for telemetry_1h, up to 60 minutes of every vehicle's
-- samples (180 million rows at 50,000 samples/s) to refresh one minute's worth. Built from
-- telemetry_1m it reads at most 60 rows per vehicle.
--
-- It also takes an optional set of vehicles, so each stream worker refreshes the vehicles it
-- wrote instead of every worker recomputing every vehicle of the same minutes.
--
-- Averages stay exact: both tables now also keep the sum and the count of the non-NULL
-- values behind avg_speed_kph and avg_rpm (avg() skips NULLs, so weighting minute averages
-- by `samples` would not give the hour's average), and last() over buckets is the value of
-- the newest sample, as before.

ALTER TABLE telemetry_1m
  ADD COLUMN sum_speed_kph double precision, ADD COLUMN speed_samples integer,
  ADD COLUMN sum_rpm double precision, ADD COLUMN rpm_samples integer;
ALTER TABLE telemetry_1h
  ADD COLUMN sum_speed_kph double precision, ADD COLUMN speed_samples integer,
  ADD COLUMN sum_rpm double precision, ADD COLUMN rpm_samples integer;
COMMENT ON COLUMN telemetry_1m.sum_speed_kph IS 'Sum of the non-NULL speeds, km/h (avg_speed_kph = this / speed_samples).';
COMMENT ON COLUMN telemetry_1m.speed_samples IS 'Rows with a speed.';
COMMENT ON COLUMN telemetry_1m.sum_rpm IS 'Sum of the non-NULL engine speeds, rev/min.';
COMMENT ON COLUMN telemetry_1m.rpm_samples IS 'Rows with an engine speed.';
COMMENT ON COLUMN telemetry_1h.sum_speed_kph IS 'Sum of the non-NULL speeds, km/h (avg_speed_kph = this / speed_samples).';
COMMENT ON COLUMN telemetry_1h.speed_samples IS 'Rows with a speed.';
COMMENT ON COLUMN telemetry_1h.sum_rpm IS 'Sum of the non-NULL engine speeds, rev/min.';
COMMENT ON COLUMN telemetry_1h.rpm_samples IS 'Rows with an engine speed.';

DROP FUNCTION fleet_refresh_rollups(timestamptz, timestamptz);
CREATE FUNCTION fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
                                      p_vehicles uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  target text;
  source text;
  n integer := 0;
  affected integer;
BEGIN
  -- Minutes from the raw rows, then hours from the minutes just refreshed. Same columns,
  -- so one upsert serves both.
  FOR target, source IN VALUES
    ('telemetry_1m', $src$
      SELECT time_bucket(INTERVAL '1 minute', time), tenant_id, vehicle_id, count(*)::integer,
             avg(speed_kph)::real, max(speed_kph), avg(rpm)::real, max(coolant_temp_c),
             min(fuel_level_pct), last(fuel_level_pct, time), min(odometer_km),
             max(odometer_km), max(engine_hours_h), min(battery_voltage_v),
             last(location, time), sum(speed_kph::double precision),
             count(speed_kph)::integer, sum(rpm::double precision), count(rpm)::integer
        FROM telemetry
       WHERE time >= time_bucket(INTERVAL '1 minute', $1)
         AND time < time_bucket(INTERVAL '1 minute', $2) + INTERVAL '1 minute'
         AND ($3 IS NULL OR vehicle_id = ANY ($3))
       GROUP BY 1, 2, 3 $src$),
    ('telemetry_1h', $src$
      SELECT time_bucket(INTERVAL '1 hour', bucket), tenant_id, vehicle_id,
             sum(samples)::integer,
             (sum(sum_speed_kph) / nullif(sum(speed_samples), 0))::real, max(max_speed_kph),
             (sum(sum_rpm) / nullif(sum(rpm_samples), 0))::real, max(max_coolant_temp_c),
             min(min_fuel_level_pct), last(last_fuel_level_pct, bucket), min(min_odometer_km),
             max(max_odometer_km), max(max_engine_hours_h), min(min_battery_voltage_v),
             last(last_location, bucket), sum(sum_speed_kph), sum(speed_samples)::integer,
             sum(sum_rpm), sum(rpm_samples)::integer
        FROM telemetry_1m
       WHERE bucket >= time_bucket(INTERVAL '1 hour', $1)
         AND bucket < time_bucket(INTERVAL '1 hour', $2) + INTERVAL '1 hour'
         AND ($3 IS NULL OR vehicle_id = ANY ($3))
       GROUP BY 1, 2, 3 $src$)
  LOOP
    EXECUTE format($q$
      INSERT INTO %I AS r %s
      ON CONFLICT (vehicle_id, bucket) DO UPDATE SET
        samples = EXCLUDED.samples, avg_speed_kph = EXCLUDED.avg_speed_kph,
        max_speed_kph = EXCLUDED.max_speed_kph, avg_rpm = EXCLUDED.avg_rpm,
        max_coolant_temp_c = EXCLUDED.max_coolant_temp_c,
        min_fuel_level_pct = EXCLUDED.min_fuel_level_pct,
        last_fuel_level_pct = EXCLUDED.last_fuel_level_pct,
        min_odometer_km = EXCLUDED.min_odometer_km, max_odometer_km = EXCLUDED.max_odometer_km,
        max_engine_hours_h = EXCLUDED.max_engine_hours_h,
        min_battery_voltage_v = EXCLUDED.min_battery_voltage_v,
        last_location = EXCLUDED.last_location, sum_speed_kph = EXCLUDED.sum_speed_kph,
        speed_samples = EXCLUDED.speed_samples, sum_rpm = EXCLUDED.sum_rpm,
        rpm_samples = EXCLUDED.rpm_samples
    $q$, target, source) USING p_from, p_to, p_vehicles;
    GET DIAGNOSTICS affected = ROW_COUNT;
    n := n + affected;
  END LOOP;
  RETURN n;
END
$$;
COMMENT ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) IS
  'Recompute telemetry_1m from telemetry, then telemetry_1h from telemetry_1m, for the buckets overlapping [from, to), of the given vehicles (NULL: all). Returns rows written.';
REVOKE ALL ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) TO fleet_ingest;

-- Existing rollups get their sums and counts (and the hours their new source).
SELECT fleet_refresh_rollups(min(time), max(time)) FROM telemetry HAVING count(*) > 0;
