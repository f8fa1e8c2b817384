-- What a sample accounts for, derived by the stream from the vehicle's previous in-order
-- sample, so that rollups can answer "how far, how long with the engine on, idling, above a
-- threshold, how much fuel" (issue #21). Continuous aggregates cannot look at a neighbouring
-- row (no window functions), so the neighbour's part is computed once, where the stream holds
-- it anyway. NULL where it cannot be known: the vehicle's first sample, a sample that arrived
-- out of event-time order, or one after a gap longer than stream.rollups.max_gap_s.

ALTER TABLE telemetry
  ADD COLUMN interval_s real,
  ADD COLUMN distance_m real,
  ADD COLUMN fuel_used_pct real,
  ADD COLUMN over_speed boolean,
  ADD COLUMN over_rpm boolean;
COMMENT ON COLUMN telemetry.interval_s IS 'Seconds since the vehicle''s previous sample (what this sample accounts for); NULL for the first, an out-of-order one, or after a gap above stream.rollups.max_gap_s.';
COMMENT ON COLUMN telemetry.distance_m IS 'Metres since the previous sample: the odometer''s increase when both have one, else the great-circle distance between the two fixes (within the gap limit).';
COMMENT ON COLUMN telemetry.fuel_used_pct IS 'Fuel level drop since the previous sample, % of tank (0 while it rises; a refuel is not use).';
COMMENT ON COLUMN telemetry.over_speed IS 'Speed above stream.rollups.overspeed_kph when the sample was written.';
COMMENT ON COLUMN telemetry.over_rpm IS 'Engine speed above stream.rollups.high_rpm when the sample was written.';

-- The readers' view gets the new columns (its column list is fixed at creation).
SELECT fleet_tenant_view('telemetry');

-- Reports bucket days in the tenant's own time zone.
CREATE FUNCTION fleet_is_timezone(tz text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
  PERFORM now() AT TIME ZONE tz;
  RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
  RETURN false;
END
$$;
ALTER TABLE tenants ADD COLUMN timezone text NOT NULL DEFAULT 'UTC'
  CHECK (fleet_is_timezone(timezone));
COMMENT ON COLUMN tenants.timezone IS 'IANA time zone of the tenant (e.g. Europe/Berlin): days in reports and daily rollups are its days.';
