-- Issue #14: the wire contract moved from edge_gateway/protocol.py into the foundation package
-- (core/protocol.py); the schema's description of a dead letter's reason says where it is now.
COMMENT ON COLUMN ingest_rejects.reason IS 'Machine-readable reason (core.protocol.RejectReason).';
