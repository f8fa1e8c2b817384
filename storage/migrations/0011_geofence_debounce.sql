-- geofences.debounce_s becomes optional: NULL means "the stream's `geofence.debounce_s`
-- setting" (default 0), which docs/geofencing.md always described as the fallback "for fences
-- without one" but which a NOT NULL column with DEFAULT 0 could never reach.
--
-- Existing rows keep the value they have, so every existing fence behaves exactly as before
-- (0 stays "no time debounce", whatever the setting says). A row that should follow the fleet
-- setting is set to NULL explicitly, e.g.
--   UPDATE geofences SET debounce_s = NULL WHERE debounce_s = 0;
-- New rows that do not name the column get NULL.
ALTER TABLE geofences
  ALTER COLUMN debounce_s DROP DEFAULT,
  ALTER COLUMN debounce_s DROP NOT NULL;

COMMENT ON COLUMN geofences.debounce_s IS 'Minimum seconds a new inside/outside state must hold before enter/exit counts; NULL: the stream''s geofence.debounce_s setting (default 0).';
