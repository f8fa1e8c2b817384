-- Dispatchers acknowledge alerts: a geofence event, a vehicle (detector) event or a fired
-- anomaly, with an optional comment. One acknowledgement per event; who and when is kept
-- (and audited by the API as event.ack). The events themselves live in hypertables without
-- a key of their own, so an acknowledgement names its event by the columns that identify
-- it there: kind, vehicle, time, type (an anomaly's signal) and, for geofence events, the
-- geofence. The API checks that the event exists in the caller's tenant before inserting.
CREATE TABLE event_acks (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  kind        text NOT NULL CHECK (kind IN ('geofence', 'vehicle', 'anomaly')),
  vehicle_id  uuid NOT NULL REFERENCES vehicles(id) ON DELETE CASCADE,
  event_time  timestamptz NOT NULL,
  event_type  text NOT NULL,
  geofence_id uuid,
  -- No ON DELETE action: an acknowledgement keeps its author, so a user who acknowledged
  -- something cannot be deleted (deactivate the account instead); deleting the tenant
  -- removes both in one statement.
  acked_by    uuid NOT NULL REFERENCES users(id),
  acked_at    timestamptz NOT NULL DEFAULT now(),
  comment     text CHECK (length(comment) <= 1000),
  CONSTRAINT event_acks_geofence_only_for_geofence_events CHECK ((kind = 'geofence') = (geofence_id IS NOT NULL)),
  CONSTRAINT event_acks_one_per_event
    UNIQUE NULLS NOT DISTINCT (tenant_id, kind, vehicle_id, event_time, event_type, geofence_id)
);
COMMENT ON TABLE event_acks IS 'Acknowledgements of alerts (geofence events, vehicle events, fired anomalies) by dispatchers: one per event, with who, when and an optional comment.';
COMMENT ON COLUMN event_acks.kind IS 'Which event table the acknowledged event is in: geofence (geofence_events), vehicle (vehicle_events) or anomaly (anomalies, is_event).';
COMMENT ON COLUMN event_acks.event_time IS 'The event''s time (its table''s time column, exact).';
COMMENT ON COLUMN event_acks.event_type IS 'The event''s event_type; for anomalies its signal.';
COMMENT ON COLUMN event_acks.geofence_id IS 'For geofence events the event''s geofence (geofences.id, not a foreign key: events outlive their fence); NULL for the other kinds.';
COMMENT ON COLUMN event_acks.acked_by IS 'User who acknowledged (users.id).';
COMMENT ON COLUMN event_acks.acked_at IS 'When it was acknowledged.';
COMMENT ON COLUMN event_acks.comment IS 'Optional note of the dispatcher, at most 1000 characters.';
CREATE INDEX idx_event_acks_tenant_time ON event_acks (tenant_id, event_time DESC);
CREATE INDEX idx_event_acks_vehicle ON event_acks (vehicle_id);
CREATE INDEX idx_event_acks_acked_by ON event_acks (acked_by);

SELECT fleet_enable_tenant_rls('event_acks', false);
-- Acknowledgements are never changed or withdrawn by the API: insert and read only.
GRANT SELECT, INSERT ON event_acks TO fleet_app;
