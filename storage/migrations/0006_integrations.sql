-- Vendor integrations (Samsara, Smartcar) and the background job runner (api/jobs):
-- encrypted vendor credentials per tenant, feed cursors, Smartcar tokens per vehicle,
-- integration dead letters, job runs and schedule state, and the cold-archive manifest.
-- Secrets are stored only as ciphertext (Fernet, key from the API settings); the database
-- never sees a token in clear.

-- integration_credentials ---------------------------------------------------------------------
CREATE TABLE integration_credentials (
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  vendor       text NOT NULL CHECK (vendor IN ('samsara', 'smartcar')),
  secret_enc   bytea NOT NULL,
  is_active    boolean NOT NULL DEFAULT true,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, vendor)
);
COMMENT ON TABLE integration_credentials IS 'Per-tenant vendor API credentials (e.g. the Samsara API token), encrypted at rest.';
COMMENT ON COLUMN integration_credentials.secret_enc IS 'Fernet token (AES-128-CBC + HMAC-SHA256) of the secret; key from integrations.token_key.';
CREATE TRIGGER integration_credentials_touch BEFORE UPDATE ON integration_credentials
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- samsara_feed_cursors ------------------------------------------------------------------------
CREATE TABLE samsara_feed_cursors (
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  feed         text NOT NULL,
  end_cursor   text,
  pages        bigint NOT NULL DEFAULT 0,
  resets       integer NOT NULL DEFAULT 0,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, feed)
);
COMMENT ON TABLE samsara_feed_cursors IS 'Where each Samsara feed of a tenant stands: the endCursor to pass as `after` next time.';
COMMENT ON COLUMN samsara_feed_cursors.feed IS 'Feed name: the comma-joined stat types (e.g. gps,engineStates,obdOdometerMeters) or safety_events.';
COMMENT ON COLUMN samsara_feed_cursors.end_cursor IS 'Samsara pagination.endCursor (for safety_events: the ISO time already covered). NULL: start from the latest state.';
COMMENT ON COLUMN samsara_feed_cursors.resets IS 'How often the feed restarted because Samsara reported the cursor as expired.';

-- smartcar_tokens -----------------------------------------------------------------------------
CREATE TABLE smartcar_tokens (
  tenant_id            uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  smartcar_vehicle_id  text NOT NULL,
  vehicle_id           uuid REFERENCES vehicles(id) ON DELETE SET NULL,
  access_token_enc     bytea NOT NULL,
  refresh_token_enc    bytea NOT NULL,
  access_expires_at    timestamptz NOT NULL,
  refresh_expires_at   timestamptz NOT NULL,
  generation           integer NOT NULL DEFAULT 1 CHECK (generation > 0),
  connected_by         uuid,
  created_at           timestamptz NOT NULL DEFAULT now(),
  updated_at           timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, smartcar_vehicle_id)
);
COMMENT ON TABLE smartcar_tokens IS 'Smartcar access/refresh token pair per connected vehicle, encrypted; replaced as one pair on refresh.';
COMMENT ON COLUMN smartcar_tokens.access_expires_at IS 'Access token expiry (Smartcar: 2 h after issue); refreshed before this.';
COMMENT ON COLUMN smartcar_tokens.refresh_expires_at IS 'Refresh token expiry (Smartcar: 60 days); after it the owner must reconnect.';
COMMENT ON COLUMN smartcar_tokens.generation IS 'Incremented on each refresh: a writer updates only the generation it read (compare-and-swap).';
CREATE INDEX idx_smartcar_tokens_vehicle ON smartcar_tokens (vehicle_id);
CREATE TRIGGER smartcar_tokens_touch BEFORE UPDATE ON smartcar_tokens
  FOR EACH ROW EXECUTE FUNCTION fleet_touch_updated_at();

-- One-time OAuth `state` values of the Smartcar Connect flow. The callback arrives from the
-- owner's browser without our API session, so the state (random, 10 minutes) is what ties it
-- to a tenant; it is deleted when used. No RLS: the random state is the capability.
CREATE TABLE smartcar_oauth_states (
  state        text PRIMARY KEY CHECK (length(state) >= 32),
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id      uuid,
  vehicle_id   uuid REFERENCES vehicles(id) ON DELETE CASCADE,
  expires_at   timestamptz NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE smartcar_oauth_states IS 'Pending Smartcar Connect consents: the OAuth state handed out by /api/smartcar/auth-url.';

-- integration_dead_letters --------------------------------------------------------------------
CREATE TABLE integration_dead_letters (
  id           bigserial PRIMARY KEY,
  time         timestamptz NOT NULL DEFAULT now(),
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  vendor       text NOT NULL CHECK (vendor IN ('samsara', 'smartcar')),
  reason       text NOT NULL,
  external_id  text,
  detail       text NOT NULL,
  payload      jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE integration_dead_letters IS 'Vendor records that could not be used (e.g. a Samsara vehicle id not mapped to any vehicle), kept with the reason.';
COMMENT ON COLUMN integration_dead_letters.reason IS 'unknown_vehicle, invalid_sample or unknown_event.';
COMMENT ON COLUMN integration_dead_letters.external_id IS 'The vendor id that could not be mapped (e.g. the Samsara vehicle id).';
CREATE INDEX idx_integration_dead_letters_tenant_time ON integration_dead_letters (tenant_id, time DESC);

-- job_runs / job_state ------------------------------------------------------------------------
CREATE TABLE job_runs (
  id           bigserial PRIMARY KEY,
  job          text NOT NULL,
  runner       text NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz,
  status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  details      jsonb NOT NULL DEFAULT '{}',
  error        text
);
COMMENT ON TABLE job_runs IS 'One row per run of a scheduled job (maintenance, retention, ...), by the runner that held the lock.';
COMMENT ON COLUMN job_runs.runner IS 'Id of the API replica whose job runner ran it (host:pid:random).';
CREATE INDEX idx_job_runs_job_started ON job_runs (job, started_at DESC);

CREATE TABLE job_state (
  job              text PRIMARY KEY,
  last_started_at  timestamptz,
  last_success_at  timestamptz,
  next_due_at      timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_state IS 'Schedule bookkeeping per job, so that a new leader continues where the old one stopped.';

CREATE TABLE job_leader (
  singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  runner       text NOT NULL,
  acquired_at  timestamptz NOT NULL,
  heartbeat_at timestamptz NOT NULL
);
COMMENT ON TABLE job_leader IS 'Which runner holds the job lock (a PostgreSQL session advisory lock); informational, the lock itself decides.';

-- archive_manifest ----------------------------------------------------------------------------
CREATE TABLE archive_manifest (
  id            bigserial PRIMARY KEY,
  tenant_id     uuid NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
  table_name    text NOT NULL,
  day           date NOT NULL,
  blob_path     text NOT NULL,
  row_count     bigint NOT NULL CHECK (row_count >= 0),
  sha256        text NOT NULL,
  size_bytes    bigint NOT NULL,
  exported_at   timestamptz NOT NULL DEFAULT now(),
  verified_at   timestamptz,
  dropped_at    timestamptz,
  restored_at   timestamptz,
  UNIQUE (tenant_id, table_name, day)
);
COMMENT ON TABLE archive_manifest IS 'Cold archive: one Parquet object per tenant, table and UTC day in Azure Blob ({tenant}/{table}/{yyyy}/{mm}/{dd}/...).';
COMMENT ON COLUMN archive_manifest.sha256 IS 'Hex SHA-256 of the Parquet object as uploaded; checked on read-back before the chunk is dropped.';
COMMENT ON COLUMN archive_manifest.dropped_at IS 'When the hot chunk holding this day was dropped (only after every tenant''s object was verified).';

-- Row-level security and privileges -----------------------------------------------------------
-- The API (fleet_app) manages credentials and Smartcar connections of its tenant; the pullers
-- (fleet_ingest) read credentials and advance cursors and tokens for every tenant.
SELECT fleet_enable_tenant_rls('integration_credentials', false);
SELECT fleet_enable_tenant_rls('samsara_feed_cursors', true);
SELECT fleet_enable_tenant_rls('smartcar_tokens', true);
SELECT fleet_enable_tenant_rls('integration_dead_letters', true);
SELECT fleet_enable_tenant_rls('archive_manifest', false);

GRANT SELECT, INSERT, UPDATE, DELETE ON integration_credentials, smartcar_tokens TO fleet_app;
GRANT SELECT, INSERT, DELETE ON smartcar_oauth_states TO fleet_app;
GRANT SELECT ON samsara_feed_cursors, integration_dead_letters, archive_manifest, job_runs,
  job_state, job_leader TO fleet_app;
GRANT SELECT ON integration_credentials TO fleet_ingest;
GRANT SELECT, INSERT, UPDATE ON samsara_feed_cursors, smartcar_tokens TO fleet_ingest;
GRANT SELECT, INSERT ON integration_dead_letters TO fleet_ingest;
GRANT USAGE ON SEQUENCE integration_dead_letters_id_seq TO fleet_ingest;

-- Smartcar webhooks name only the Smartcar vehicle id; the API's role sees one tenant at a
-- time (RLS), so this narrow definer function finds the owner of a linked vehicle.
CREATE FUNCTION smartcar_vehicle_owner(p_smartcar_id text)
RETURNS TABLE (tenant_id uuid, tenant_slug text, vehicle_code text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT v.tenant_id, t.slug, v.code
    FROM vehicles v JOIN tenants t ON t.id = v.tenant_id
   WHERE v.smartcar_id = p_smartcar_id AND t.is_active AND v.status = 'active'
$$;
COMMENT ON FUNCTION smartcar_vehicle_owner(text) IS
  'Tenant, tenant slug and vehicle code of the active vehicle linked to a Smartcar vehicle id.';
REVOKE ALL ON FUNCTION smartcar_vehicle_owner(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smartcar_vehicle_owner(text) TO fleet_app, fleet_ingest;

-- Column notes (docs/schema.md is generated from these) -----------------------------------------
COMMENT ON COLUMN integration_credentials.vendor IS 'samsara or smartcar.';
COMMENT ON COLUMN samsara_feed_cursors.pages IS 'Pages consumed since the feed started (monitoring).';
COMMENT ON COLUMN smartcar_tokens.smartcar_vehicle_id IS 'Smartcar''s vehicle id (one consent covers one vehicle: Connect single_select).';
COMMENT ON COLUMN smartcar_tokens.access_token_enc IS 'Fernet ciphertext of the access token.';
COMMENT ON COLUMN smartcar_tokens.refresh_token_enc IS 'Fernet ciphertext of the refresh token (single use at Smartcar).';
COMMENT ON COLUMN smartcar_tokens.connected_by IS 'User who started the Connect flow.';
COMMENT ON COLUMN smartcar_oauth_states.state IS 'Random OAuth state handed to Connect; deleted when the callback uses it.';
COMMENT ON COLUMN smartcar_oauth_states.expires_at IS 'After this the callback is refused (Smartcar codes live 10 minutes).';
COMMENT ON COLUMN integration_dead_letters.vendor IS 'samsara or smartcar.';
COMMENT ON COLUMN integration_dead_letters.detail IS 'Human-readable explanation.';
COMMENT ON COLUMN integration_dead_letters.payload IS 'The vendor record as received (JSON).';
COMMENT ON COLUMN job_runs.job IS 'Job name: maintenance, retention or rollups.';
COMMENT ON COLUMN job_runs.started_at IS 'When the run started.';
COMMENT ON COLUMN job_runs.finished_at IS 'When it ended; NULL while running (or when the runner was stopped mid-run).';
COMMENT ON COLUMN job_runs.status IS 'running, succeeded or failed.';
COMMENT ON COLUMN job_runs.error IS 'Exception of a failed run.';
COMMENT ON COLUMN job_runs.details IS 'What the run did (counts, failures), JSON.';
COMMENT ON COLUMN job_state.job IS 'Job name.';
COMMENT ON COLUMN job_state.last_started_at IS 'Start of the latest run.';
COMMENT ON COLUMN job_state.last_success_at IS 'End of the latest successful run.';
COMMENT ON COLUMN job_state.next_due_at IS 'When the leader runs the job next (UTC).';
COMMENT ON COLUMN job_leader.singleton IS 'Always true: the table has one row.';
COMMENT ON COLUMN job_leader.runner IS 'Runner id (host:pid:random) of the current leader.';
COMMENT ON COLUMN job_leader.acquired_at IS 'When it took the advisory lock.';
COMMENT ON COLUMN job_leader.heartbeat_at IS 'Its latest heartbeat on the lock-holding session.';
COMMENT ON COLUMN archive_manifest.table_name IS 'Archived hypertable (telemetry).';
COMMENT ON COLUMN archive_manifest.day IS 'UTC day of the rows in the object.';
COMMENT ON COLUMN archive_manifest.blob_path IS 'Object name in the archive container.';
COMMENT ON COLUMN archive_manifest.row_count IS 'Rows exported; checked on read-back and before a drop or restore.';
COMMENT ON COLUMN archive_manifest.size_bytes IS 'Size of the Parquet object, bytes.';
COMMENT ON COLUMN archive_manifest.exported_at IS 'When the object was (last) written.';
COMMENT ON COLUMN archive_manifest.verified_at IS 'When the read-back check passed.';
COMMENT ON COLUMN archive_manifest.restored_at IS 'When `fleet archive restore` last brought the day back.';
