-- Telemetry positions as two integers, degrees x 10^7, instead of a PostGIS `geography`
-- (issue #21). A geography point is a 32-byte varlena per row that compression can only
-- dictionary- or LZ-compress: on the project's simulated fleet it was 38 % of a compressed
-- chunk. Two integers are 8 bytes hot and compress by delta-of-delta (a vehicle's position
-- changes smoothly from one second to the next): cold bytes per sample fell by a third and
-- hot ones by a tenth (docs/benchmarks.md). 10^-7 degrees is about 1 cm, far below a GPS
-- fix's error, and both fit a 32-bit integer (|lon| <= 1.8e9).
--
-- Readers are unaffected: `tenant.telemetry` still has `location` (a geography computed from
-- the integers), and gains `lat_deg` and `lon_deg`. 0017 rebuilds the rollups on the integers
-- and drops the old column.

-- Schema-qualified, so that it means the same in every caller's search_path (and stays an
-- inlinable SQL function: a SET search_path clause would stop the planner inlining it).
CREATE FUNCTION fleet_position(p_lat_e7 integer, p_lon_e7 integer) RETURNS public.geography
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT public.ST_SetSRID(public.ST_MakePoint(p_lon_e7 / 1e7::float8, p_lat_e7 / 1e7::float8),
                           4326)::public.geography $$;
COMMENT ON FUNCTION fleet_position(integer, integer) IS
  'WGS84 point of a position stored as degrees x 10^7 (NULL when either is NULL).';

-- No CHECK constraint on the range: TimescaleDB refuses to add one to a hypertable with
-- compressed chunks. The wire decoder bounds latitude and longitude before anything is stored.
ALTER TABLE telemetry ADD COLUMN lat_e7 integer, ADD COLUMN lon_e7 integer;
COMMENT ON COLUMN telemetry.lat_e7 IS 'WGS84 latitude, degrees x 10^7; NULL when the sample has no fix (readers: tenant.telemetry.location or lat_deg).';
COMMENT ON COLUMN telemetry.lon_e7 IS 'WGS84 longitude, degrees x 10^7; NULL with lat_e7.';

-- Existing rows, compressed chunks included (TimescaleDB decompresses what an UPDATE touches
-- and its compression policy compresses it again; the default cap on decompressed rows per
-- transaction would stop a large table half-way).
SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = 0;
UPDATE telemetry
   SET lat_e7 = round(ST_Y(location::geometry) * 1e7), lon_e7 = round(ST_X(location::geometry) * 1e7)
 WHERE location IS NOT NULL;

-- The same columns as before, in the same order (`location` now computed), plus the position
-- in degrees for readers who want numbers rather than a geography.
CREATE OR REPLACE VIEW tenant.telemetry WITH (security_barrier) AS
SELECT time, tenant_id, vehicle_id, seq,
       public.fleet_position(lat_e7, lon_e7)::public.geography(Point, 4326) AS location,
       altitude_m, speed_kph, heading_deg, rpm, coolant_temp_c, fuel_level_pct, odometer_km,
       engine_hours_h, battery_voltage_v, throttle_pct, engine_load_pct, ignition,
       gps_fix_quality, gps_hdop, gps_satellites, dtc_codes, extra, source, received_at,
       interval_s, distance_m, fuel_used_pct, over_speed, over_rpm,
       lat_e7 / 1e7::float8 AS lat_deg, lon_e7 / 1e7::float8 AS lon_deg
  FROM public.telemetry
 WHERE tenant_id = public.fleet_reader_tenant();
COMMENT ON COLUMN tenant.telemetry.location IS 'WGS84 position; NULL when the sample has no fix.';
COMMENT ON COLUMN tenant.telemetry.lat_deg IS 'WGS84 latitude, degrees; NULL when the sample has no fix.';
COMMENT ON COLUMN tenant.telemetry.lon_deg IS 'WGS84 longitude, degrees; NULL when the sample has no fix.';
