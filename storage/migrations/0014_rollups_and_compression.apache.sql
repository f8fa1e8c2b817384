-- The Apache edition's rollups, as 0009 left them, behind the same interface as the other
-- edition's continuous aggregates (0014_rollups_and_compression.timescale): a procedure,
-- `CALL fleet_refresh_rollups(from, to[, vehicles])`. Here the stream (the ingest role) and
-- the rollups job call it; `fleet db refresh-rollups` calls it on either edition. This
-- refresh needs no transaction control, so it may stay SECURITY DEFINER (it writes every
-- tenant's rollups whoever calls it) and run inside the caller's transaction.
--
-- Retention stays with the retention job on this edition (it has no policies).
--
-- The rollups also get the columns built on 0013's derived signals, as on the other edition.

ALTER TABLE telemetry_1m
  ADD COLUMN max_rpm real, ADD COLUMN distance_km double precision, ADD COLUMN engine_on_s real,
  ADD COLUMN idle_s real, ADD COLUMN over_speed_s real, ADD COLUMN over_rpm_s real,
  ADD COLUMN fuel_used_pct real;
ALTER TABLE telemetry_1h
  ADD COLUMN max_rpm real, ADD COLUMN distance_km double precision, ADD COLUMN engine_on_s real,
  ADD COLUMN idle_s real, ADD COLUMN over_speed_s real, ADD COLUMN over_rpm_s real,
  ADD COLUMN fuel_used_pct real;
SELECT fleet_tenant_view('telemetry_1m');
SELECT fleet_tenant_view('telemetry_1h');

DROP FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]);
CREATE PROCEDURE fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
                                      p_vehicles uuid[] DEFAULT NULL)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  target text;
  source text;
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
             count(speed_kph)::integer, sum(rpm::double precision), count(rpm)::integer,
             max(rpm), sum(distance_m::double precision) / 1000,
             -- Seconds: observed but never in that state is 0, never observed is NULL.
             sum(CASE WHEN coalesce(rpm > 0, ignition) THEN interval_s ELSE interval_s * 0 END),
             sum(CASE WHEN coalesce(rpm > 0, ignition) AND coalesce(speed_kph, 0) < 2 THEN interval_s ELSE interval_s * 0 END),
             sum(CASE WHEN over_speed THEN interval_s ELSE interval_s * 0 END), sum(CASE WHEN over_rpm THEN interval_s ELSE interval_s * 0 END),
             sum(fuel_used_pct)
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
             sum(sum_rpm), sum(rpm_samples)::integer, max(max_rpm), sum(distance_km),
             sum(engine_on_s), sum(idle_s), sum(over_speed_s), sum(over_rpm_s),
             sum(fuel_used_pct)
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
        rpm_samples = EXCLUDED.rpm_samples, max_rpm = EXCLUDED.max_rpm,
        distance_km = EXCLUDED.distance_km, engine_on_s = EXCLUDED.engine_on_s,
        idle_s = EXCLUDED.idle_s, over_speed_s = EXCLUDED.over_speed_s,
        over_rpm_s = EXCLUDED.over_rpm_s, fuel_used_pct = EXCLUDED.fuel_used_pct
    $q$, target, source) USING p_from, p_to, p_vehicles;
  END LOOP;
END
$$;
COMMENT ON PROCEDURE fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) IS
  'Recompute telemetry_1m from telemetry, then telemetry_1h from telemetry_1m, for the buckets overlapping [from, to), of the given vehicles (NULL: all).';
REVOKE ALL ON PROCEDURE fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON PROCEDURE fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) TO fleet_ingest;
