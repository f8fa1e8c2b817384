-- Meaning of the rollup columns built on 0013's derived signals (the same on both editions),
-- and days in the tenant's time zone for reports.

DO $$
DECLARE v text;
BEGIN
  FOREACH v IN ARRAY ARRAY['telemetry_1m', 'telemetry_1h'] LOOP
    EXECUTE format($c$
      COMMENT ON COLUMN %1$I.max_rpm IS 'Highest engine speed, rev/min.';
      COMMENT ON COLUMN %1$I.distance_km IS 'Distance driven, km: sum of telemetry.distance_m (odometer where the vehicle reports one, else GPS).';
      COMMENT ON COLUMN %1$I.engine_on_s IS 'Seconds with the engine running (rpm > 0, or the ignition where rpm is unknown).';
      COMMENT ON COLUMN %1$I.idle_s IS 'Seconds with the engine running below 2 km/h.';
      COMMENT ON COLUMN %1$I.over_speed_s IS 'Seconds above stream.rollups.overspeed_kph.';
      COMMENT ON COLUMN %1$I.over_rpm_s IS 'Seconds above stream.rollups.high_rpm.';
      COMMENT ON COLUMN %1$I.fuel_used_pct IS 'Fuel used, %% of tank (level drops; refuels are not subtracted). Litres: times vehicles.tank_capacity_l / 100.';
    $c$, v);
  END LOOP;
END $$;

-- One row per vehicle and day of the reader's tenant, days in the tenant's time zone, from
-- the minute rollup (a day in a zone such as Asia/Kolkata does not start on a whole hour).
-- A function rather than a view, so that the day range bounds the minutes read; it runs as
-- the caller, through the tenant view, so it shows only the caller's tenant. PL/pgSQL, not an
-- inlinable SQL function: inlined, TimescaleDB 2.19 checks the continuous aggregate's
-- privileges as the caller instead of the view's owner and refuses it.
CREATE FUNCTION tenant.telemetry_days(p_from date, p_to date)
RETURNS TABLE (day date, tenant_id uuid, vehicle_id uuid, samples integer,
               distance_km double precision, engine_on_s real, idle_s real,
               over_speed_s real, over_rpm_s real, fuel_used_pct real, avg_speed_kph real,
               max_speed_kph real, max_rpm real, min_odometer_km double precision,
               max_odometer_km double precision)
LANGUAGE plpgsql STABLE AS $$
DECLARE
  v_tz text := (SELECT t.timezone FROM tenants t WHERE t.id = fleet_reader_tenant());
BEGIN
  RETURN QUERY
  SELECT (m.bucket AT TIME ZONE v_tz)::date, m.tenant_id, m.vehicle_id,
         sum(m.samples)::integer, sum(m.distance_km), sum(m.engine_on_s)::real,
         sum(m.idle_s)::real, sum(m.over_speed_s)::real, sum(m.over_rpm_s)::real,
         sum(m.fuel_used_pct)::real,
         (sum(m.sum_speed_kph) / nullif(sum(m.speed_samples), 0))::real, max(m.max_speed_kph),
         max(m.max_rpm), min(m.min_odometer_km), max(m.max_odometer_km)
    FROM tenant.telemetry_1m m
   WHERE m.bucket >= (p_from::timestamp AT TIME ZONE v_tz)
     AND m.bucket < ((p_to + 1)::timestamp AT TIME ZONE v_tz)
   GROUP BY 1, 2, 3;
END
$$;
COMMENT ON FUNCTION tenant.telemetry_days(date, date) IS
  'Per vehicle and day (from..to inclusive, in the tenant''s time zone): distance, engine-on, idle and above-threshold seconds, fuel used, speeds, odometer.';
REVOKE ALL ON FUNCTION tenant.telemetry_days(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenant.telemetry_days(date, date) TO fleet_app, fleet_analyst;
