-- `fleet_refresh_rollups` refreshes the named range whatever the invalidation logs say
-- (`force`, TimescaleDB 2.17+). Without it, a refresh by hand that ran while a refresh
-- policy was materialising the same aggregate could find the range's invalidations already
-- taken by the policy, whose snapshot predated the new rows, and leave the hour stale
-- (seen in tests/storage/test_rollups_and_compression.py about one run in six).
CREATE OR REPLACE PROCEDURE fleet_refresh_rollups(p_from timestamptz, p_to timestamptz,
                                                  p_vehicles uuid[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
  lo timestamptz := time_bucket(INTERVAL '1 hour', p_from);
  hi timestamptz := time_bucket(INTERVAL '1 hour', p_to) + INTERVAL '1 hour';
BEGIN
  CALL refresh_continuous_aggregate('telemetry_1m', lo, hi, force => true);
  CALL refresh_continuous_aggregate('telemetry_1h', lo, hi, force => true);
END
$$;
