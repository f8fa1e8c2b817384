-- API additions: the login lookup the application role needs before it knows the tenant,
-- and rotating refresh tokens.

-- Login happens before a tenant is known, and the application role sees users only through
-- row-level security. This function returns exactly what the login check needs for one
-- e-mail address (never a list), so fleet_app needs no cross-tenant read access to users.
CREATE FUNCTION api_login_lookup(p_email text)
RETURNS TABLE (user_id uuid, tenant_id uuid, tenant_slug text, tenant_active boolean,
               email text, role text, password_hash text, driver_id uuid,
               failed_login_attempts integer, account_locked_until timestamptz,
               is_active boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
  SELECT u.id, u.tenant_id, t.slug, t.is_active, u.email, u.role, u.password_hash, u.driver_id,
         u.failed_login_attempts, u.account_locked_until, u.is_active
    FROM users u JOIN tenants t ON t.id = u.tenant_id
   WHERE lower(u.email) = lower(p_email)
$$;
COMMENT ON FUNCTION api_login_lookup(text) IS
  'Login check for one e-mail address across tenants (SECURITY DEFINER for the API role).';
REVOKE ALL ON FUNCTION api_login_lookup(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION api_login_lookup(text) TO fleet_app;

CREATE TABLE api_refresh_tokens (
  jti         uuid PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  issued_at   timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz,
  replaced_by uuid
);
COMMENT ON TABLE api_refresh_tokens IS
  'Refresh tokens by id (the token itself is a signed JWT); each is usable once, then replaced.';
COMMENT ON COLUMN api_refresh_tokens.replaced_by IS 'The token issued when this one was used; reuse of a used token revokes the family.';
CREATE INDEX idx_api_refresh_tokens_user ON api_refresh_tokens (user_id);
SELECT fleet_enable_tenant_rls('api_refresh_tokens', false);
GRANT SELECT, INSERT, UPDATE ON api_refresh_tokens TO fleet_app;
