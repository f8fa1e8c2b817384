-- Rollups for the licensed ("timescale") edition: continuous aggregates with refresh
-- policies, compression of older telemetry, and retention of dead letters. Raw telemetry has
-- no retention policy on purpose: the archive job exports chunks to cold storage and drops
-- them only after the export is verified.

CREATE MATERIALIZED VIEW telemetry_1m_agg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, tenant_id, vehicle_id,
       count(*)::integer AS samples, avg(speed_kph)::real AS avg_speed_kph,
       max(speed_kph) AS max_speed_kph, avg(rpm)::real AS avg_rpm,
       max(coolant_temp_c) AS max_coolant_temp_c, min(fuel_level_pct) AS min_fuel_level_pct,
       last(fuel_level_pct, time) AS last_fuel_level_pct, min(odometer_km) AS min_odometer_km,
       max(odometer_km) AS max_odometer_km, max(engine_hours_h) AS max_engine_hours_h,
       min(battery_voltage_v) AS min_battery_voltage_v, last(location, time) AS last_location
  FROM telemetry
 GROUP BY 1, 2, 3
WITH NO DATA;

CREATE MATERIALIZED VIEW telemetry_1h_agg
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, tenant_id, vehicle_id,
       count(*)::integer AS samples, avg(speed_kph)::real AS avg_speed_kph,
       max(speed_kph) AS max_speed_kph, avg(rpm)::real AS avg_rpm,
       max(coolant_temp_c) AS max_coolant_temp_c, min(fuel_level_pct) AS min_fuel_level_pct,
       last(fuel_level_pct, time) AS last_fuel_level_pct, min(odometer_km) AS min_odometer_km,
       max(odometer_km) AS max_odometer_km, max(engine_hours_h) AS max_engine_hours_h,
       min(battery_voltage_v) AS min_battery_voltage_v, last(location, time) AS last_location
  FROM telemetry
 GROUP BY 1, 2, 3
WITH NO DATA;

SELECT add_continuous_aggregate_policy('telemetry_1m_agg', start_offset => INTERVAL '2 hours',
  end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute');
SELECT add_continuous_aggregate_policy('telemetry_1h_agg', start_offset => INTERVAL '3 days',
  end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '30 minutes');

-- Continuous aggregates do not take row-level security: these views apply the tenant filter
-- for the application role and show every tenant to analysts and the owner.
CREATE VIEW telemetry_1m WITH (security_barrier) AS
  SELECT * FROM telemetry_1m_agg
   WHERE tenant_id = app_current_tenant() OR current_user NOT IN ('fleet_app');
CREATE VIEW telemetry_1h WITH (security_barrier) AS
  SELECT * FROM telemetry_1h_agg
   WHERE tenant_id = app_current_tenant() OR current_user NOT IN ('fleet_app');
GRANT SELECT ON telemetry_1m, telemetry_1h TO fleet_app, fleet_ingest;

-- Continuous aggregates refresh themselves; this keeps the Apache edition's call valid.
CREATE FUNCTION fleet_refresh_rollups(p_from timestamptz, p_to timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  RETURN 0;
END
$$;
REVOKE ALL ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz) TO fleet_ingest;

ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'vehicle_id',
                           timescaledb.compress_orderby = 'time DESC, seq DESC');
SELECT add_compression_policy('telemetry', INTERVAL '7 days');
SELECT add_retention_policy('ingest_rejects', INTERVAL '30 days');
SELECT add_retention_policy('telemetry_1m_agg', INTERVAL '400 days');
