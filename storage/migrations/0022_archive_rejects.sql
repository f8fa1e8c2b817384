-- Issue #24, finding 3: one row the archive cannot encode (a two-dimensional varchar[] in
-- telemetry.dtc_codes) made every archive run fail and kept that chunk and all later ones hot.
--
-- 1. Such rows are now dead letters of the archive: written here with the reason, the rest of
--    the chunk archived and dropped as usual.
-- 2. New rows may no longer hold them. A CHECK constraint would be the natural form, but
--    TimescaleDB refuses to add constraints to a hypertable that holds compressed chunks
--    ("operation not supported on hypertables that have compressed data"), which every
--    installation of the Timescale edition past its compression window does. A row trigger
--    with a WHEN clause does the same job there: the condition is evaluated without calling
--    the function, and a 100,000-row COPY into a telemetry-shaped hypertable took 0.98 s with
--    it and 0.99 s without (median of 6 alternating rounds). Rows written before this
--    migration are not checked; the archive dead-letters them when their day is archived.
CREATE TABLE archive_rejects (
  id           bigserial PRIMARY KEY,
  tenant_id    uuid NOT NULL REFERENCES tenants(id) ON DELETE RESTRICT,
  table_name   text NOT NULL,
  day          date NOT NULL,
  row_key      jsonb NOT NULL,
  column_name  text NOT NULL,
  reason       text NOT NULL,
  row_text     text NOT NULL,
  rejected_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (tenant_id, table_name, day, row_key)
);
COMMENT ON TABLE archive_rejects IS 'Rows the cold archive could not encode (for example a multi-dimensional array or one whose lower bound is not 1), kept here instead of in an archived object when their chunk was dropped.';
COMMENT ON COLUMN archive_rejects.id IS 'Surrogate key.';
COMMENT ON COLUMN archive_rejects.tenant_id IS 'Tenant of the row.';
COMMENT ON COLUMN archive_rejects.table_name IS 'Archived hypertable the row was in (telemetry).';
COMMENT ON COLUMN archive_rejects.day IS 'UTC day of the row''s time.';
COMMENT ON COLUMN archive_rejects.row_key IS 'The row''s unique key (its table''s narrowest unique index) as a JSON object (all its columns for a table without one).';
COMMENT ON COLUMN archive_rejects.column_name IS 'First column whose value could not be encoded.';
COMMENT ON COLUMN archive_rejects.reason IS 'Why, for example "2-dimensional array" or "array lower bound 0".';
COMMENT ON COLUMN archive_rejects.row_text IS 'The whole row in PostgreSQL''s record text form, array bounds included: (row_text::telemetry).* reads it back; to store it again, reshape the offending value first (the table refuses it as it is).';
COMMENT ON COLUMN archive_rejects.rejected_at IS 'When the archive run dead-lettered it.';
CREATE INDEX idx_archive_rejects_day ON archive_rejects (table_name, day);

SELECT fleet_enable_tenant_rls('archive_rejects', false);
GRANT SELECT ON archive_rejects TO fleet_app;

CREATE FUNCTION fleet_refuse_array_shape() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  -- Only called when the trigger's WHEN clause found a bad array. TG_ARGV[0] names the column
  -- as table.column: on a hypertable TG_TABLE_NAME is the chunk's name.
  RAISE EXCEPTION '%: only one-dimensional arrays with lower bound 1 are stored', TG_ARGV[0]
    USING ERRCODE = 'check_violation',
          HINT = 'Write the array as ''{a,b}'' or ARRAY[...]; the cold archive keeps no other shape.';
END
$$;
COMMENT ON FUNCTION fleet_refuse_array_shape() IS 'Refuses a row whose array column is not one-dimensional with lower bound 1 (the archive''s Parquet lists cannot hold other shapes).';

COMMENT ON COLUMN telemetry.dtc_codes IS 'Diagnostic trouble codes reported with the sample (SAE J2012); one-dimensional, counted from 1 (other shapes are refused).';

CREATE TRIGGER telemetry_dtc_codes_shape
  BEFORE INSERT OR UPDATE OF dtc_codes ON telemetry FOR EACH ROW
  WHEN (array_ndims(NEW.dtc_codes) <> 1 OR array_lower(NEW.dtc_codes, 1) <> 1)
  EXECUTE FUNCTION fleet_refuse_array_shape('telemetry.dtc_codes');
