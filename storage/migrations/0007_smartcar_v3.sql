-- Smartcar API v3 connections. v3 has no per-vehicle tokens: one application token (held in
-- memory by each API replica) plus the owner's Smartcar user id, sent as the `sc-user-id`
-- header. Connect returns that user id on its redirect; this table keeps it per vehicle.
-- Vehicles connected earlier under API 2.0 keep their rows in smartcar_tokens (0006).

CREATE TABLE smartcar_v3_connections (
  tenant_id            uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  smartcar_vehicle_id  text NOT NULL,
  smartcar_user_id     text NOT NULL,
  vehicle_id           uuid REFERENCES vehicles(id) ON DELETE SET NULL,
  connected_by         uuid,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, smartcar_vehicle_id)
);
COMMENT ON TABLE smartcar_v3_connections IS 'Vehicles connected through Smartcar API v3: the Smartcar vehicle and the owner (user) whose consent scopes every request.';
COMMENT ON COLUMN smartcar_v3_connections.tenant_id IS 'Tenant that started the Connect flow.';
COMMENT ON COLUMN smartcar_v3_connections.smartcar_vehicle_id IS 'Smartcar''s vehicle id (from GET /v3/connections?user_id=...).';
COMMENT ON COLUMN smartcar_v3_connections.smartcar_user_id IS 'Smartcar user id from the Connect redirect (user_id); sent as the sc-user-id header. Not a secret on its own: requests also need the application token.';
COMMENT ON COLUMN smartcar_v3_connections.vehicle_id IS 'Our vehicle this connection is linked to (NULL: not linked; vehicles.smartcar_id may still match).';
COMMENT ON COLUMN smartcar_v3_connections.connected_by IS 'User who started the Connect flow.';
COMMENT ON COLUMN smartcar_v3_connections.created_at IS 'When the vehicle was first connected through v3.';
COMMENT ON COLUMN smartcar_v3_connections.updated_at IS 'When the connection was last replaced (a new consent).';
CREATE INDEX idx_smartcar_v3_connections_vehicle ON smartcar_v3_connections (vehicle_id);
CREATE TRIGGER smartcar_v3_connections_touch BEFORE UPDATE ON smartcar_v3_connections
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- The API (fleet_app) records connections of its tenant; the puller (fleet_ingest) reads all.
SELECT fleet_enable_tenant_rls('smartcar_v3_connections', false);
GRANT SELECT, INSERT, UPDATE, DELETE ON smartcar_v3_connections TO fleet_app;
GRANT SELECT ON smartcar_v3_connections TO fleet_ingest;
