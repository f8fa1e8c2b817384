-- Continuous aggregates materialise only the ranges invalidated by new rows, so the licensed
-- edition never re-reads a whole hour per refresh (the Apache edition's problem fixed by
-- 0009_hourly_from_minutes.apache.sql). Only the function's new signature is kept in step,
-- so the stream's call is the same in both editions.
DROP FUNCTION fleet_refresh_rollups(timestamptz, timestamptz);
CREATE FUNCTION fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
                                      p_vehicles uuid[] DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  RETURN 0;
END
$$;
REVOKE ALL ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_refresh_rollups(timestamptz, timestamptz, uuid[]) TO fleet_ingest;
