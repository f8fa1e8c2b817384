-- Row-level security for the pending Smartcar OAuth states, and the SECURITY DEFINER functions
-- the application role can call narrowed to what their callers need (issue #13, point 5; the
-- threat model is in docs/api.md, "Threat model: the application role").
--
-- `app.tenant_id` is an ordinary setting: whoever holds fleet_app's credentials (or injects
-- SQL into one of its queries) can set it to any tenant id they know. So tenant ids are what a
-- stolen fleet_app must not be able to enumerate, and every definer function below is a way
-- from something the caller holds (an e-mail address, an OAuth state, a Smartcar vehicle id)
-- to one tenant's row: each returns only the columns its one caller uses.

-- smartcar_oauth_states -----------------------------------------------------------------------
-- Without RLS the application role, with no tenant set, listed every tenant's pending states
-- (and with them the tenant ids). Now it inserts and reads only its own tenant's states, and
-- the callback (which arrives from the owner's browser, before any tenant is known) consumes a
-- state through smartcar_consume_oauth_state(): knowing the random state is the capability.
SELECT fleet_enable_tenant_rls('smartcar_oauth_states', false);
-- Consuming must be one-time and expiry-checked in one place, so the role may no longer delete.
REVOKE DELETE ON smartcar_oauth_states FROM fleet_app;
COMMENT ON TABLE smartcar_oauth_states IS
  'Pending Smartcar Connect consents: the OAuth state handed out by /api/smartcar/auth-url; used once through smartcar_consume_oauth_state().';

CREATE FUNCTION smartcar_consume_oauth_state(p_state text)
RETURNS TABLE (tenant_id uuid, user_id uuid, vehicle_id uuid)
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  -- Expired states of every tenant go too: nobody can use them, and nothing else removes the
  -- states of Connect flows the owner never finished.
  WITH expired AS (
    DELETE FROM smartcar_oauth_states s WHERE s.expires_at <= now() AND s.state <> p_state
  ), used AS (
    DELETE FROM smartcar_oauth_states s WHERE s.state = p_state
    RETURNING s.tenant_id, s.user_id, s.vehicle_id, s.expires_at
  )
  SELECT u.tenant_id, u.user_id, u.vehicle_id FROM used u WHERE u.expires_at > now()
$$;
COMMENT ON FUNCTION smartcar_consume_oauth_state(text) IS
  'Deletes one Smartcar OAuth state and returns its tenant, user and vehicle when it had not expired (SECURITY DEFINER for the API role).';
REVOKE ALL ON FUNCTION smartcar_consume_oauth_state(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smartcar_consume_oauth_state(text) TO fleet_app;

-- api_login_lookup ------------------------------------------------------------------------------
-- It returned the whole account (tenant slug, e-mail, role, driver, failure counter) for any
-- address. The login needs before the password check only: whom to bind the transaction to
-- (user, tenant), the hash to verify, whether a lock-out is in force and whether the account
-- may log in at all. Role, e-mail and driver are read after a successful check, under RLS.
-- Accounts that cannot log in (user or tenant inactive) hand out no hash.
DROP FUNCTION api_login_lookup(text);
CREATE FUNCTION api_login_lookup(p_email text)
RETURNS TABLE (user_id uuid, tenant_id uuid, password_hash text,
               account_locked_until timestamptz, can_log_in boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT u.id, u.tenant_id,
         CASE WHEN u.is_active AND t.is_active THEN u.password_hash END,
         CASE WHEN u.account_locked_until > now() THEN u.account_locked_until END,
         u.is_active AND t.is_active
    FROM users u JOIN tenants t ON t.id = u.tenant_id
   WHERE lower(u.email) = lower(p_email)
$$;
COMMENT ON FUNCTION api_login_lookup(text) IS
  'Login check for one e-mail address across tenants: user, tenant, hash (only for accounts that may log in), lock-out in force (SECURITY DEFINER for the API role).';
REVOKE ALL ON FUNCTION api_login_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_login_lookup(text) TO fleet_app;

-- smartcar_vehicle_owner ------------------------------------------------------------------------
-- The webhook needs the MQTT topic (tenant slug, vehicle code), not the tenant id. And
-- vehicles.smartcar_id is writable by any tenant's managers, so a second tenant could claim
-- another's Smartcar vehicle and receive its webhook data: a vehicle whose tenant holds a
-- consent for it (a v3 connection or a 2.0 token pair, which only the car's owner can grant)
-- wins; a bare link counts only when it is the only one. fleet_ingest never called it.
DROP FUNCTION smartcar_vehicle_owner(text);
CREATE FUNCTION smartcar_vehicle_owner(p_smartcar_id text)
RETURNS TABLE (tenant_slug text, vehicle_code text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH linked AS (
    SELECT t.slug, v.code,
           EXISTS (SELECT 1 FROM smartcar_v3_connections c
                    WHERE c.tenant_id = v.tenant_id AND c.smartcar_vehicle_id = p_smartcar_id)
           OR EXISTS (SELECT 1 FROM smartcar_tokens k
                       WHERE k.tenant_id = v.tenant_id AND k.smartcar_vehicle_id = p_smartcar_id)
             AS consented
      FROM vehicles v JOIN tenants t ON t.id = v.tenant_id
     WHERE v.smartcar_id = p_smartcar_id AND t.is_active AND v.status = 'active'
  )
  SELECT l.slug, l.code FROM linked l
   WHERE l.consented OR (SELECT count(*) FROM linked) = 1
   ORDER BY l.slug
$$;
COMMENT ON FUNCTION smartcar_vehicle_owner(text) IS
  'MQTT topic (tenant slug, vehicle code) of the active vehicle(s) linked to a Smartcar vehicle id: those whose tenant holds a consent for it, else the only link (SECURITY DEFINER for the API role).';
REVOKE ALL ON FUNCTION smartcar_vehicle_owner(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION smartcar_vehicle_owner(text) TO fleet_app;

-- audit_chain -----------------------------------------------------------------------------------
-- A trigger function (it reads the chain's last row across tenants). PostgreSQL checks EXECUTE
-- when a trigger is created, not when it fires, so nobody needs it; like every definer
-- function it should not be executable by PUBLIC.
REVOKE ALL ON FUNCTION audit_chain() FROM PUBLIC;
