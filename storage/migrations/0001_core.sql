-- Core relational tables: tenants, users, drivers, vehicles, devices, geofences,
-- latest vehicle state, maintenance, work orders and the audit log.
-- Row-level security is keyed on the session setting app.tenant_id (DESIGN.md decision 4).

CREATE FUNCTION app_current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT nullif(current_setting('app.tenant_id', true), '')::uuid
$$;
COMMENT ON FUNCTION app_current_tenant() IS
  'Tenant of the current transaction (set_config(''app.tenant_id'', ..., true)); NULL when unset.';

-- Enables row-level security on a tenant table: the application role sees and writes only rows
-- of app.tenant_id; the ingest role (the stream, which checks tenancy itself) sees all rows.
CREATE FUNCTION fleet_enable_tenant_rls(tbl regclass, ingest_writes boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
  EXECUTE format('CREATE POLICY tenant_isolation ON %s TO fleet_app '
                 'USING (tenant_id = app_current_tenant()) '
                 'WITH CHECK (tenant_id = app_current_tenant())', tbl);
  IF ingest_writes THEN
    EXECUTE format('CREATE POLICY ingest_all ON %s TO fleet_ingest USING (true) WITH CHECK (true)', tbl);
  ELSE
    EXECUTE format('CREATE POLICY ingest_read ON %s FOR SELECT TO fleet_ingest USING (true)', tbl);
  END IF;
END
$$;

CREATE FUNCTION fleet_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- tenants -------------------------------------------------------------------------------------
CREATE TABLE tenants (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug        text NOT NULL UNIQUE CHECK (slug ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
  name        text NOT NULL,
  domain      text,
  settings    jsonb NOT NULL DEFAULT '{}',
  is_active   boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE tenants IS 'Organisation accounts; every other table belongs to one tenant.';
COMMENT ON COLUMN tenants.slug IS 'Tenant id used in MQTT topics (fleet/v1/{slug}/...).';
COMMENT ON COLUMN tenants.settings IS 'Per-tenant settings (JSON object).';
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants TO fleet_app
  USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());
CREATE POLICY ingest_read ON tenants FOR SELECT TO fleet_ingest USING (true);
CREATE TRIGGER tenants_touch BEFORE UPDATE ON tenants
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- drivers -------------------------------------------------------------------------------------
CREATE TABLE drivers (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  first_name       text NOT NULL,
  last_name        text NOT NULL,
  email            text,
  phone            text,
  license_number   text,
  license_state    text,
  license_expiry   date,
  cdl_class        text,
  cdl_endorsements varchar(50)[] NOT NULL DEFAULT '{}',
  status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'suspended')),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE drivers IS 'Driver records.';
CREATE INDEX idx_drivers_tenant ON drivers (tenant_id);
CREATE TRIGGER drivers_touch BEFORE UPDATE ON drivers
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- users ---------------------------------------------------------------------------------------
CREATE TABLE users (
  id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id             uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  email                 text NOT NULL,
  role                  text NOT NULL CHECK (role IN ('admin', 'fleet_manager', 'driver', 'technician', 'viewer')),
  password_hash         text NOT NULL,
  first_name            text,
  last_name             text,
  driver_id             uuid REFERENCES drivers(id) ON DELETE SET NULL,
  failed_login_attempts integer NOT NULL DEFAULT 0 CHECK (failed_login_attempts >= 0),
  account_locked_until  timestamptz,
  mfa_enabled           boolean NOT NULL DEFAULT false,
  mfa_secret            text,
  is_active             boolean NOT NULL DEFAULT true,
  last_login_at         timestamptz,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'User accounts with a role from the RBAC matrix (docs/schema.md).';
COMMENT ON COLUMN users.password_hash IS 'Argon2id hash (PHC string); never the password.';
COMMENT ON COLUMN users.driver_id IS 'For role driver: the driver record, which decides the assigned vehicle.';
COMMENT ON COLUMN users.account_locked_until IS 'Set for 30 minutes after 3 failed logins (AC-7).';
CREATE UNIQUE INDEX idx_users_email ON users (lower(email));
CREATE INDEX idx_users_tenant ON users (tenant_id);
CREATE TRIGGER users_touch BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- vehicles ------------------------------------------------------------------------------------
CREATE TABLE vehicles (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  code               text NOT NULL CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
  vin                varchar(17),
  make               text,
  model              text,
  year               integer CHECK (year BETWEEN 1950 AND 2100),
  license_plate      text,
  fuel_type          text CHECK (fuel_type IN ('gasoline', 'diesel', 'electric', 'hybrid', 'cng', 'lpg', 'hydrogen')),
  tank_capacity_l    real CHECK (tank_capacity_l > 0),
  gps_device_id      text,
  samsara_id         text,
  smartcar_id        text,
  odometer_km        double precision CHECK (odometer_km >= 0),
  engine_hours_h     double precision CHECK (engine_hours_h >= 0),
  status             text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'maintenance', 'retired')),
  assigned_driver_id uuid REFERENCES drivers(id) ON DELETE SET NULL,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, code)
);
COMMENT ON TABLE vehicles IS 'Vehicle inventory.';
COMMENT ON COLUMN vehicles.code IS 'Vehicle id used in MQTT topics (fleet/v1/{tenant}/{code}/...), unique per tenant.';
COMMENT ON COLUMN vehicles.odometer_km IS 'Last known odometer, km (updated from telemetry).';
COMMENT ON COLUMN vehicles.engine_hours_h IS 'Last known engine hours, h.';
COMMENT ON COLUMN vehicles.samsara_id IS 'Samsara vehicle id, for the Samsara puller.';
COMMENT ON COLUMN vehicles.smartcar_id IS 'Smartcar vehicle id, for the Smartcar puller.';
COMMENT ON COLUMN vehicles.status IS 'Only active vehicles are accepted by the stream.';
CREATE INDEX idx_vehicles_tenant ON vehicles (tenant_id);
CREATE INDEX idx_vehicles_assigned_driver ON vehicles (assigned_driver_id);
CREATE UNIQUE INDEX idx_vehicles_samsara ON vehicles (tenant_id, samsara_id) WHERE samsara_id IS NOT NULL;
CREATE UNIQUE INDEX idx_vehicles_smartcar ON vehicles (tenant_id, smartcar_id) WHERE smartcar_id IS NOT NULL;
CREATE TRIGGER vehicles_touch BEFORE UPDATE ON vehicles
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- devices -------------------------------------------------------------------------------------
CREATE TABLE devices (
  id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id          uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  vehicle_id         uuid REFERENCES vehicles(id) ON DELETE SET NULL,
  kind               text NOT NULL DEFAULT 'edge_gateway' CHECK (kind IN ('edge_gateway', 'telematics_unit', 'simulator')),
  serial             text,
  mqtt_username      text NOT NULL UNIQUE,
  mqtt_password_hash text NOT NULL,
  software_version   text,
  status             text NOT NULL DEFAULT 'provisioned' CHECK (status IN ('provisioned', 'online', 'offline', 'sleeping', 'revoked')),
  last_seen_at       timestamptz,
  created_at         timestamptz NOT NULL DEFAULT now(),
  updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE devices IS 'Edge gateways and other devices with their MQTT credentials.';
COMMENT ON COLUMN devices.mqtt_username IS 'Broker login, "{tenant slug}/{vehicle code}": the ACL lets it write only its own topics.';
COMMENT ON COLUMN devices.mqtt_password_hash IS 'Mosquitto PBKDF2-SHA512 hash of the device password.';
CREATE INDEX idx_devices_tenant ON devices (tenant_id);
CREATE INDEX idx_devices_vehicle ON devices (vehicle_id);
CREATE TRIGGER devices_touch BEFORE UPDATE ON devices
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- geofences -----------------------------------------------------------------------------------
CREATE TABLE geofences (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name             text NOT NULL,
  kind             text NOT NULL CHECK (kind IN ('polygon', 'circle', 'corridor')),
  geometry         geography(Geometry, 4326) NOT NULL,
  radius_m         double precision CHECK (radius_m > 0),
  corridor_width_m double precision CHECK (corridor_width_m > 0),
  zone             geography(Geometry, 4326) GENERATED ALWAYS AS (
                     CASE kind
                       WHEN 'circle' THEN ST_Buffer(geometry, radius_m, 'quad_segs=16')
                       WHEN 'corridor' THEN ST_Buffer(geometry, corridor_width_m / 2, 'endcap=round join=round')
                       ELSE geometry
                     END) STORED,
  category         text,
  speed_limit_kph  real CHECK (speed_limit_kph > 0),
  dwell_s          integer CHECK (dwell_s > 0),
  debounce_s       integer NOT NULL DEFAULT 0 CHECK (debounce_s >= 0),
  alert_on_entry   boolean NOT NULL DEFAULT false,
  alert_on_exit    boolean NOT NULL DEFAULT false,
  alert_recipients text[] NOT NULL DEFAULT '{}',
  is_active        boolean NOT NULL DEFAULT true,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT geofence_shape CHECK (
    (kind = 'polygon'  AND GeometryType(geometry) IN ('POLYGON', 'MULTIPOLYGON'))
    OR (kind = 'circle'   AND GeometryType(geometry) = 'POINT' AND radius_m IS NOT NULL)
    OR (kind = 'corridor' AND GeometryType(geometry) = 'LINESTRING' AND corridor_width_m IS NOT NULL))
);
COMMENT ON TABLE geofences IS 'Geographic boundaries: polygons (with holes, multipolygons), circles and corridors.';
COMMENT ON COLUMN geofences.geometry IS 'As drawn: polygon/multipolygon, circle centre point, or corridor centre line (WGS84).';
COMMENT ON COLUMN geofences.radius_m IS 'Circle radius, metres on the ellipsoid.';
COMMENT ON COLUMN geofences.corridor_width_m IS 'Full corridor width, metres (half on each side of the line).';
COMMENT ON COLUMN geofences.zone IS 'The area the fence covers (circles and corridors buffered in metres); use this in ST_Covers.';
COMMENT ON COLUMN geofences.speed_limit_kph IS 'Speed limit inside the fence, km/h; overrides the global limit.';
COMMENT ON COLUMN geofences.dwell_s IS 'A dwell event fires after this many seconds inside.';
COMMENT ON COLUMN geofences.debounce_s IS 'Minimum seconds a new inside/outside state must hold before enter/exit counts.';
CREATE INDEX idx_geofences_tenant ON geofences (tenant_id);
CREATE INDEX idx_geofences_zone ON geofences USING GIST (zone);
CREATE TRIGGER geofences_touch BEFORE UPDATE ON geofences
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- The stream's geofence index reloads on this notification instead of polling.
CREATE FUNCTION fleet_notify_geofences() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('fleet_geofences', coalesce(NEW.tenant_id, OLD.tenant_id)::text);
  RETURN NULL;
END
$$;
CREATE TRIGGER geofences_notify AFTER INSERT OR UPDATE OR DELETE ON geofences
  FOR EACH ROW EXECUTE FUNCTION fleet_notify_geofences();

-- vehicle_state -------------------------------------------------------------------------------
CREATE TABLE vehicle_state (
  vehicle_id        uuid PRIMARY KEY REFERENCES vehicles(id) ON DELETE CASCADE,
  tenant_id         uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  time              timestamptz NOT NULL,
  last_seq          bigint NOT NULL,
  location          geography(Point, 4326),
  speed_kph         real,
  heading_deg       real,
  ignition          boolean,
  moving            boolean,
  rpm               real,
  coolant_temp_c    real,
  fuel_level_pct    real,
  odometer_km       double precision,
  engine_hours_h    double precision,
  battery_voltage_v real,
  dtc_codes         varchar(10)[] NOT NULL DEFAULT '{}',
  inside_geofences  uuid[] NOT NULL DEFAULT '{}',
  updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE vehicle_state IS 'Latest known position and signals per vehicle (one row per vehicle, upserted by the stream).';
COMMENT ON COLUMN vehicle_state.time IS 'Time of the newest sample reflected here.';
COMMENT ON COLUMN vehicle_state.last_seq IS 'Sequence number of that sample.';
COMMENT ON COLUMN vehicle_state.inside_geofences IS 'Geofences the vehicle is inside now.';
CREATE INDEX idx_vehicle_state_tenant ON vehicle_state (tenant_id);
CREATE INDEX idx_vehicle_state_location ON vehicle_state USING GIST (location);

-- maintenance ---------------------------------------------------------------------------------
CREATE TABLE maintenance_schedules (
  id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id               uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  vehicle_id              uuid NOT NULL REFERENCES vehicles(id) ON DELETE CASCADE,
  service_type            text NOT NULL,
  interval_type           text NOT NULL CHECK (interval_type IN ('days', 'miles', 'km', 'hours')),
  interval_value          double precision NOT NULL CHECK (interval_value > 0),
  last_service_date       date,
  last_service_odometer_km double precision,
  last_service_engine_hours_h double precision,
  next_service_due_date   date,
  next_service_due_odometer_km double precision,
  next_service_due_engine_hours_h double precision,
  is_active               boolean NOT NULL DEFAULT true,
  last_checked_at         timestamptz,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CHECK (interval_type <> 'days' OR next_service_due_date IS NOT NULL),
  CHECK (interval_type NOT IN ('miles', 'km') OR next_service_due_odometer_km IS NOT NULL),
  CHECK (interval_type <> 'hours' OR next_service_due_engine_hours_h IS NOT NULL)
);
COMMENT ON TABLE maintenance_schedules IS 'Preventive maintenance due by date, distance or engine hours.';
COMMENT ON COLUMN maintenance_schedules.interval_value IS 'Interval in the unit of interval_type (days, miles, km or engine hours).';
COMMENT ON COLUMN maintenance_schedules.next_service_due_odometer_km IS 'Odometer at which service is due, km (also for mile intervals).';
CREATE INDEX idx_maintenance_schedules_tenant ON maintenance_schedules (tenant_id);
CREATE INDEX idx_maintenance_schedules_vehicle ON maintenance_schedules (vehicle_id);
CREATE TRIGGER maintenance_schedules_touch BEFORE UPDATE ON maintenance_schedules
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

CREATE TABLE work_orders (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id        uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  vehicle_id       uuid NOT NULL REFERENCES vehicles(id) ON DELETE CASCADE,
  schedule_id      uuid REFERENCES maintenance_schedules(id) ON DELETE SET NULL,
  schedule_due_key text,
  type             text NOT NULL CHECK (type IN ('preventive', 'corrective', 'inspection')),
  priority         text NOT NULL DEFAULT 'medium' CHECK (priority IN ('low', 'medium', 'high', 'critical')),
  status           text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'completed', 'cancelled')),
  description      text NOT NULL,
  odometer_reading_km double precision,
  labor_cost       numeric(10, 2) NOT NULL DEFAULT 0,
  parts_cost       numeric(10, 2) NOT NULL DEFAULT 0,
  total_cost       numeric(10, 2) GENERATED ALWAYS AS (labor_cost + parts_cost) STORED,
  assigned_to      uuid REFERENCES users(id) ON DELETE SET NULL,
  due_date         date,
  completed_at     timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  UNIQUE (schedule_id, schedule_due_key)
);
COMMENT ON TABLE work_orders IS 'Maintenance work orders.';
COMMENT ON COLUMN work_orders.schedule_due_key IS 'Which due occurrence of the schedule this order serves; makes the scheduler idempotent.';
COMMENT ON COLUMN work_orders.total_cost IS 'labor_cost + parts_cost (generated), in the tenant currency.';
CREATE INDEX idx_work_orders_tenant ON work_orders (tenant_id);
CREATE INDEX idx_work_orders_vehicle ON work_orders (vehicle_id);
CREATE TRIGGER work_orders_touch BEFORE UPDATE ON work_orders
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- audit_logs ----------------------------------------------------------------------------------
CREATE TABLE audit_logs (
  id            bigint PRIMARY KEY,
  tenant_id     uuid REFERENCES tenants(id) ON DELETE RESTRICT,
  user_id       uuid,
  action        text NOT NULL,
  resource_type text NOT NULL,
  resource_id   text,
  details       jsonb NOT NULL DEFAULT '{}',
  ip_address    inet,
  user_agent    text,
  outcome       text NOT NULL CHECK (outcome IN ('success', 'failure')),
  error_message text,
  created_at    timestamptz NOT NULL DEFAULT now(),
  prev_hash     text NOT NULL,
  hash          text NOT NULL
);
COMMENT ON COLUMN audit_logs.id IS 'Position in the hash chain, assigned by the chain trigger.';
COMMENT ON TABLE audit_logs IS 'Append-only audit trail (AU-2/AU-3), hash-chained: hash = sha256(prev_hash and the row).';
COMMENT ON COLUMN audit_logs.hash IS 'Hex SHA-256 over audit_canonical(row); `fleet audit verify` recomputes the chain.';
CREATE INDEX idx_audit_logs_tenant ON audit_logs (tenant_id, created_at DESC);
CREATE INDEX idx_audit_logs_created_at ON audit_logs (created_at DESC);

CREATE FUNCTION audit_canonical(a audit_logs) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT concat_ws(E'\x1f', a.id::text, coalesce(a.tenant_id::text, ''), coalesce(a.user_id::text, ''),
                   a.action, a.resource_type, coalesce(a.resource_id, ''), a.details::text,
                   coalesce(host(a.ip_address), ''), coalesce(a.user_agent, ''), a.outcome,
                   coalesce(a.error_message, ''),
                   to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   a.prev_hash)
$$;

-- SECURITY DEFINER: the chain spans tenants, which the inserting role cannot see.
CREATE FUNCTION audit_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
  -- One chain: serialise writers so that two inserts never share a predecessor.
  PERFORM pg_advisory_xact_lock(hashtext('fleet_audit_chain'));
  -- The id is taken inside the lock too, so that id order is chain order.
  SELECT id, hash INTO NEW.id, NEW.prev_hash FROM audit_logs ORDER BY id DESC LIMIT 1;
  NEW.id := coalesce(NEW.id, 0) + 1;
  NEW.prev_hash := coalesce(NEW.prev_hash, repeat('0', 64));
  NEW.created_at := date_trunc('microseconds', clock_timestamp());
  NEW.hash := encode(sha256(convert_to(audit_canonical(NEW), 'UTF8')), 'hex');
  RETURN NEW;
END
$$;
CREATE TRIGGER audit_logs_chain BEFORE INSERT ON audit_logs
  FOR EACH ROW EXECUTE FUNCTION audit_chain();

-- Row-level security on every tenant table -----------------------------------------------------
SELECT fleet_enable_tenant_rls('drivers', false);
SELECT fleet_enable_tenant_rls('users', false);
SELECT fleet_enable_tenant_rls('vehicles', false);
SELECT fleet_enable_tenant_rls('devices', true);
SELECT fleet_enable_tenant_rls('geofences', false);
SELECT fleet_enable_tenant_rls('vehicle_state', true);
SELECT fleet_enable_tenant_rls('maintenance_schedules', false);
SELECT fleet_enable_tenant_rls('work_orders', false);
SELECT fleet_enable_tenant_rls('audit_logs', false);
-- Failed logins for unknown e-mail addresses belong to no tenant but must still be recorded.
CREATE POLICY audit_anonymous_insert ON audit_logs FOR INSERT TO fleet_app WITH CHECK (tenant_id IS NULL);

-- Privileges: the application role may not change or remove audit rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, drivers, users, vehicles, devices, geofences,
  vehicle_state, maintenance_schedules, work_orders TO fleet_app;
GRANT SELECT, INSERT ON audit_logs TO fleet_app;
GRANT SELECT ON tenants, vehicles, geofences, drivers TO fleet_ingest;
GRANT SELECT, INSERT, UPDATE ON vehicle_state, devices TO fleet_ingest;
