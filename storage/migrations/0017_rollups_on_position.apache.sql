-- The Apache edition's rollup refresh on the integer position of 0016 (0014's procedure with
-- `last_location` computed by fleet_position()), then the geography column dropped. The
-- rollup tables keep their rows: nothing in them changes.

CREATE OR REPLACE PROCEDURE fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
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
             last(fleet_position(lat_e7, lon_e7), time), sum(speed_kph::double precision),
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

ALTER TABLE telemetry DROP COLUMN location;
