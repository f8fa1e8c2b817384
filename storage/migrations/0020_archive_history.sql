-- Issue #24, finding 1: late rows for an archived day are merged into its object, never
-- written over it. Each merge keeps what the object was before.
ALTER TABLE archive_manifest ADD COLUMN history jsonb NOT NULL DEFAULT '[]'::jsonb;
COMMENT ON COLUMN archive_manifest.history IS 'Earlier versions of the object, oldest first: [{"sha256", "row_count", "exported_at"}] (a tenant-day archived again when late rows arrived, the new object holding the union).';
