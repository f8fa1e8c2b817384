-- Issue #23, finding 3: a device whose vehicle was deleted before the API revoked devices
-- with their vehicle kept its broker login (vehicle_id became NULL through ON DELETE SET NULL,
-- status stayed as it was). Revoke those rows the way the API does: status 'revoked', a freed
-- login name, and a password hash no password matches (a random PBKDF2 "digest"), so a broker
-- that authenticates against this table refuses them. A broker with its own login store (the
-- dynamic-security plugin) drops their logins with `fleet broker prune`.
UPDATE devices
SET status = 'revoked',
    mqtt_username = mqtt_username || '#revoked-' || id::text,
    mqtt_password_hash = '$7$101$'
      || encode(substring(sha512((gen_random_uuid()::text)::bytea) FROM 1 FOR 12), 'base64')
      || '$' || encode(sha512((gen_random_uuid()::text)::bytea), 'base64')
WHERE vehicle_id IS NULL AND status <> 'revoked';
