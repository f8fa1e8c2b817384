-- Time-series hypertables. Every row carries tenant_id for row-level security; units are in
-- the column names. Unique keys include `time` (a hypertable requirement) and make ingest
-- idempotent: a redelivered sample or event conflicts with the stored one.

CREATE TABLE telemetry (
  time              timestamptz NOT NULL,
  tenant_id         uuid NOT NULL,
  vehicle_id        uuid NOT NULL,
  seq               bigint NOT NULL,
  location          geography(Point, 4326),
  altitude_m        real,
  speed_kph         real,
  heading_deg       real,
  rpm               real,
  coolant_temp_c    real,
  fuel_level_pct    real,
  odometer_km       double precision,
  engine_hours_h    double precision,
  battery_voltage_v real,
  throttle_pct      real,
  engine_load_pct   real,
  ignition          boolean,
  gps_fix_quality   smallint,
  gps_hdop          real,
  gps_satellites    smallint,
  dtc_codes         varchar(10)[],
  extra             jsonb,
  source            text NOT NULL,
  received_at       timestamptz NOT NULL DEFAULT now()
);
SELECT create_hypertable('telemetry', by_range('time', INTERVAL '1 day'));
CREATE UNIQUE INDEX idx_telemetry_idempotency ON telemetry (vehicle_id, seq, time);
CREATE INDEX idx_telemetry_tenant_time ON telemetry (tenant_id, time DESC);
CREATE INDEX idx_telemetry_vehicle_time ON telemetry (vehicle_id, time DESC);
COMMENT ON TABLE telemetry IS 'One row per sample from any source (gateway, Samsara, Smartcar, simulator).';
COMMENT ON COLUMN telemetry.time IS 'Sample time (device clock, UTC).';
COMMENT ON COLUMN telemetry.seq IS 'Per-vehicle sequence number; (vehicle_id, seq) is the idempotency key.';
COMMENT ON COLUMN telemetry.location IS 'WGS84 position; NULL when the sample has no fix.';
COMMENT ON COLUMN telemetry.altitude_m IS 'Altitude above mean sea level, metres.';
COMMENT ON COLUMN telemetry.speed_kph IS 'Ground speed, km/h.';
COMMENT ON COLUMN telemetry.heading_deg IS 'Course over ground, degrees clockwise from true north.';
COMMENT ON COLUMN telemetry.rpm IS 'Engine speed, revolutions per minute.';
COMMENT ON COLUMN telemetry.coolant_temp_c IS 'Engine coolant temperature, degrees Celsius.';
COMMENT ON COLUMN telemetry.fuel_level_pct IS 'Fuel level, percent of tank (state of charge for EVs).';
COMMENT ON COLUMN telemetry.odometer_km IS 'Odometer, kilometres.';
COMMENT ON COLUMN telemetry.engine_hours_h IS 'Engine hours, hours.';
COMMENT ON COLUMN telemetry.battery_voltage_v IS '12/24 V battery or adapter voltage, volts.';
COMMENT ON COLUMN telemetry.throttle_pct IS 'Throttle position, percent.';
COMMENT ON COLUMN telemetry.engine_load_pct IS 'Calculated engine load, percent.';
COMMENT ON COLUMN telemetry.gps_fix_quality IS 'NMEA GGA fix quality: 0 none, 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 dead reckoning.';
COMMENT ON COLUMN telemetry.gps_hdop IS 'Horizontal dilution of precision (unitless).';
COMMENT ON COLUMN telemetry.dtc_codes IS 'Diagnostic trouble codes reported with the sample (SAE J2012).';
COMMENT ON COLUMN telemetry.extra IS 'Further signals by name, the unit in the name (e.g. intake_temp_c).';
COMMENT ON COLUMN telemetry.source IS 'gateway, obd, can, gps, samsara, smartcar or simulator.';
COMMENT ON COLUMN telemetry.received_at IS 'When the row was written (for latency analysis).';

CREATE TABLE geofence_events (
  time        timestamptz NOT NULL,
  tenant_id   uuid NOT NULL,
  vehicle_id  uuid NOT NULL,
  geofence_id uuid NOT NULL,
  event_type  text NOT NULL CHECK (event_type IN ('enter', 'exit', 'dwell', 'crossing')),
  location    geography(Point, 4326),
  speed_kph   real,
  dwell_s     double precision,
  seq         bigint,
  details     jsonb NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('geofence_events', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX idx_geofence_events_idempotency ON geofence_events (vehicle_id, geofence_id, event_type, time);
CREATE INDEX idx_geofence_events_tenant_time ON geofence_events (tenant_id, time DESC);
CREATE INDEX idx_geofence_events_fence_time ON geofence_events (geofence_id, time DESC);
COMMENT ON TABLE geofence_events IS 'Entry, exit, dwell and crossing events per vehicle and geofence.';
COMMENT ON COLUMN geofence_events.time IS 'Event time: the sample that confirmed the state change.';
COMMENT ON COLUMN geofence_events.dwell_s IS 'Seconds inside: at exit the whole stay, at dwell the threshold reached.';
COMMENT ON COLUMN geofence_events.seq IS 'Sequence number of the sample that produced the event.';

CREATE TABLE vehicle_events (
  time        timestamptz NOT NULL,
  tenant_id   uuid NOT NULL,
  vehicle_id  uuid NOT NULL,
  event_type  text NOT NULL CHECK (event_type IN (
                'overspeed', 'harsh_acceleration', 'harsh_braking', 'idling', 'ignition_on',
                'ignition_off', 'dtc_new', 'low_battery', 'fuel_drop', 'refuel',
                'device_offline', 'device_online', 'coolant_overheat')),
  severity    text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'critical')),
  started_at  timestamptz,
  ended_at    timestamptz,
  duration_s  double precision,
  value       double precision,
  threshold   double precision,
  location    geography(Point, 4326),
  geofence_id uuid,
  details     jsonb NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('vehicle_events', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX idx_vehicle_events_idempotency ON vehicle_events (vehicle_id, event_type, time);
CREATE INDEX idx_vehicle_events_tenant_time ON vehicle_events (tenant_id, time DESC);
COMMENT ON TABLE vehicle_events IS 'Safety and health events from the detectors; episodes carry start, end and duration.';
COMMENT ON COLUMN vehicle_events.value IS 'The measured value in the unit of the event (overspeed: max km/h; harsh_*: m/s^2; low_battery: V; fuel_drop/refuel: % of tank; coolant_overheat: degC; idling: s).';
COMMENT ON COLUMN vehicle_events.threshold IS 'The threshold crossed, same unit as value.';
COMMENT ON COLUMN vehicle_events.duration_s IS 'Episode length, seconds.';

CREATE TABLE anomalies (
  time        timestamptz NOT NULL,
  tenant_id   uuid NOT NULL,
  vehicle_id  uuid NOT NULL,
  signal      text NOT NULL,
  kind        text NOT NULL DEFAULT 'signal' CHECK (kind IN ('signal', 'fleet_relative')),
  value       double precision,
  score       double precision NOT NULL,
  threshold   double precision NOT NULL,
  is_event    boolean NOT NULL DEFAULT false,
  details     jsonb NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('anomalies', by_range('time', INTERVAL '7 days'));
CREATE UNIQUE INDEX idx_anomalies_idempotency ON anomalies (vehicle_id, signal, kind, time);
CREATE INDEX idx_anomalies_tenant_time ON anomalies (tenant_id, time DESC);
COMMENT ON TABLE anomalies IS 'Anomaly scores (robust z-scores) per vehicle and signal; is_event marks a fired anomaly.';
COMMENT ON COLUMN anomalies.score IS 'Robust z-score: |value - median| / (1.4826 * MAD) over the window (unitless).';

CREATE TABLE video_events (
  time         timestamptz NOT NULL,
  tenant_id    uuid NOT NULL,
  vehicle_id   uuid,
  source       text NOT NULL,
  external_id  text NOT NULL,
  event_type   text NOT NULL,
  severity     text,
  video_url    text,
  location     geography(Point, 4326),
  details      jsonb NOT NULL DEFAULT '{}'
);
SELECT create_hypertable('video_events', by_range('time', INTERVAL '30 days'));
CREATE UNIQUE INDEX idx_video_events_idempotency ON video_events (tenant_id, source, external_id, time);
CREATE INDEX idx_video_events_tenant_time ON video_events (tenant_id, time DESC);
COMMENT ON TABLE video_events IS 'Dash-camera and vendor safety events (e.g. Samsara harsh braking with video).';
COMMENT ON COLUMN video_events.external_id IS 'The vendor''s event id.';

CREATE TABLE fuel_transactions (
  time         timestamptz NOT NULL,
  tenant_id    uuid NOT NULL,
  vehicle_id   uuid NOT NULL,
  driver_id    uuid,
  liters       real NOT NULL CHECK (liters > 0),
  cost         numeric(10, 2),
  currency     char(3),
  odometer_km  double precision,
  station      text,
  location     geography(Point, 4326),
  external_id  text
);
SELECT create_hypertable('fuel_transactions', by_range('time', INTERVAL '30 days'));
CREATE INDEX idx_fuel_transactions_tenant_time ON fuel_transactions (tenant_id, time DESC);
CREATE INDEX idx_fuel_transactions_vehicle_time ON fuel_transactions (vehicle_id, time DESC);
COMMENT ON TABLE fuel_transactions IS 'Fuel purchases.';
COMMENT ON COLUMN fuel_transactions.liters IS 'Volume, litres.';
COMMENT ON COLUMN fuel_transactions.cost IS 'Amount paid in `currency` (ISO 4217).';

CREATE TABLE ingest_rejects (
  time         timestamptz NOT NULL DEFAULT now(),
  tenant_id    uuid,
  vehicle_code text,
  reason       text NOT NULL,
  detail       text NOT NULL,
  topic        text NOT NULL,
  payload      bytea NOT NULL
);
SELECT create_hypertable('ingest_rejects', by_range('time', INTERVAL '7 days'));
CREATE INDEX idx_ingest_rejects_tenant_time ON ingest_rejects (tenant_id, time DESC);
CREATE INDEX idx_ingest_rejects_reason_time ON ingest_rejects (reason, time DESC);
COMMENT ON TABLE ingest_rejects IS 'Dead letters: every message the stream could not use, with the reason and the raw payload.';
COMMENT ON COLUMN ingest_rejects.time IS 'When the stream rejected it.';
COMMENT ON COLUMN ingest_rejects.tenant_id IS 'Tenant of the topic when it is known, else NULL.';
COMMENT ON COLUMN ingest_rejects.reason IS 'Machine-readable reason (edge_gateway.protocol.RejectReason).';
COMMENT ON COLUMN ingest_rejects.payload IS 'The message as received (truncated to 64 KiB).';

SELECT fleet_enable_tenant_rls('telemetry', true);
SELECT fleet_enable_tenant_rls('geofence_events', true);
SELECT fleet_enable_tenant_rls('vehicle_events', true);
SELECT fleet_enable_tenant_rls('anomalies', true);
SELECT fleet_enable_tenant_rls('video_events', true);
SELECT fleet_enable_tenant_rls('fuel_transactions', true);
SELECT fleet_enable_tenant_rls('ingest_rejects', true);

GRANT SELECT ON telemetry, geofence_events, vehicle_events, anomalies, ingest_rejects TO fleet_app;
GRANT SELECT, INSERT ON video_events, fuel_transactions TO fleet_app;
GRANT SELECT, INSERT ON telemetry, geofence_events, vehicle_events, anomalies, video_events,
  fuel_transactions, ingest_rejects TO fleet_ingest;
