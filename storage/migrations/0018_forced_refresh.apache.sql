-- Nothing on this edition: its rollups are tables that `fleet_refresh_rollups` recomputes
-- outright (0018_forced_refresh.timescale makes the other edition's refresh do the same).
SELECT 1;
