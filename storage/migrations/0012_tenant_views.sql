-- Tenancy on the time-series tables moves from row-level security to views (issue #21;
-- docs/schema.md, "Tenancy").
--
-- Why not RLS on hypertables:
--   * TimescaleDB does not apply a hypertable's policies to its chunks
--     (timescale/timescaledb#7830): a role that may read `telemetry` reads every tenant's rows
--     from `_timescaledb_internal._hyper_1_1_chunk`, and chunk names are in the catalog.
--   * On the Timescale-licence edition, compression and continuous aggregates refuse a
--     hypertable with row security (timescale/timescaledb#6827, #6832).
--
-- So: only the owner and the ingest role (the stream, the jobs) may touch a hypertable, and
-- with it its chunks, compressed chunks and materialisations (TimescaleDB copies a
-- hypertable's grants to them). The application role and analysts read tenant data through
-- the views of schema `tenant`, which filter on fleet_reader_tenant(): for the API role the
-- transaction's app.tenant_id (the API is trusted with every tenant), for an analyst the
-- tenant bound to its login in analyst_roles, which the analyst cannot change. The views are
-- security barriers, so a caller's own (leaky) function cannot see rows before the filter.
-- Ordinary tables keep row-level security, which holds on them.

CREATE SCHEMA tenant;
COMMENT ON SCHEMA tenant IS
  'One tenant''s view of the time-series tables: what the API role and analysts read.';

-- Analysts: one login role per person, a member of fleet_analyst, bound to one tenant.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fleet_analyst') THEN
    CREATE ROLE fleet_analyst NOLOGIN;
  END IF;
END $$;
COMMENT ON ROLE fleet_analyst IS
  'Group role of analysts: read-only, one tenant each (analyst_roles).';

CREATE TABLE analyst_roles (
  role_name  name PRIMARY KEY,
  tenant_id  uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE analyst_roles IS
  'The tenant each analyst login reads (`fleet db analyst create`); only the owner reads or writes it.';
COMMENT ON COLUMN analyst_roles.role_name IS 'The analyst''s PostgreSQL login (matched against session_user).';

-- The binding of the login running the query. session_user, not current_user: inside this
-- SECURITY DEFINER function current_user is the owner, and session_user is the role that
-- logged in, which only a superuser can change (SET ROLE does not). No parameter, so nobody
-- can look up another login's tenant through it.
CREATE FUNCTION fleet_analyst_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT a.tenant_id FROM analyst_roles a WHERE a.role_name = session_user
$$;
REVOKE ALL ON FUNCTION fleet_analyst_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fleet_analyst_tenant() TO fleet_app, fleet_analyst;

-- Inside a view current_user is the role running the query (the view's owner only lends its
-- table privileges), so the API role is told apart from analysts here.
CREATE FUNCTION fleet_reader_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN current_user = 'fleet_app' THEN app_current_tenant()
              ELSE fleet_analyst_tenant() END
$$;
COMMENT ON FUNCTION fleet_reader_tenant() IS
  'Tenant whose rows the current reader sees: app.tenant_id for fleet_app, the analyst_roles binding of the login for an analyst, else NULL (nothing).';

-- Puts a tenant table behind a view: no row security (it would not hold on chunks and blocks
-- compression), no direct access for the API role, and tenant.<name> for readers. Re-run it
-- after adding columns to the table: the view's column list is fixed when it is created.
CREATE FUNCTION fleet_tenant_view(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  rel_name name;
  pol name;
BEGIN
  SELECT c.relname INTO rel_name FROM pg_class c WHERE c.oid = tbl;
  IF (SELECT c.relkind FROM pg_class c WHERE c.oid = tbl) IN ('r', 'p') THEN
    FOR pol IN SELECT p.polname FROM pg_policy p WHERE p.polrelid = tbl LOOP
      EXECUTE format('DROP POLICY %I ON %s', pol, tbl);
    END LOOP;
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
  END IF;
  EXECUTE format('REVOKE ALL ON %s FROM fleet_app, fleet_analyst, PUBLIC', tbl);
  EXECUTE format('CREATE OR REPLACE VIEW tenant.%I WITH (security_barrier) AS '
                 'SELECT * FROM %s WHERE tenant_id = fleet_reader_tenant()', rel_name, tbl);
  EXECUTE format('COMMENT ON VIEW tenant.%I IS %L', rel_name,
                 format('%s of the reader''s tenant (see fleet_reader_tenant()).', rel_name));
  EXECUTE format('GRANT SELECT ON tenant.%I TO fleet_app, fleet_analyst', rel_name);
END
$$;
REVOKE ALL ON FUNCTION fleet_tenant_view(regclass) FROM PUBLIC;

SELECT fleet_tenant_view(t::regclass) FROM unnest(ARRAY[
  'telemetry', 'geofence_events', 'vehicle_events', 'anomalies', 'video_events',
  'fuel_transactions', 'ingest_rejects']) AS t;
-- The Apache edition's rollup tables (the other edition's continuous aggregates come in 0014).
SELECT fleet_tenant_view(to_regclass(t)) FROM unnest(ARRAY['telemetry_1m', 'telemetry_1h']) AS t
 WHERE to_regclass(t) IS NOT NULL;

GRANT USAGE ON SCHEMA tenant TO fleet_app, fleet_analyst;

-- Analysts also read their tenant's reference data (ordinary tables: row security holds).
-- Not users, devices, credentials, tokens or the audit log: secrets and access control.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['drivers', 'vehicles', 'geofences', 'vehicle_state',
                           'maintenance_schedules', 'work_orders'] LOOP
    EXECUTE format('CREATE POLICY analyst_read ON %I FOR SELECT TO fleet_analyst '
                   'USING (tenant_id = fleet_reader_tenant())', t);
    EXECUTE format('GRANT SELECT ON %I TO fleet_analyst', t);
  END LOOP;
END $$;
CREATE POLICY analyst_read ON tenants FOR SELECT TO fleet_analyst
  USING (id = fleet_reader_tenant());
GRANT SELECT ON tenants TO fleet_analyst;
