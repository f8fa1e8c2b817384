-- The stream's durable inbox and idempotent dead letters.
--
-- stream_inbox is the write-ahead log of the MQTT source: every message the broker delivers is
-- committed here *before* the stream acknowledges it (PUBACK), and the dataflow reads its
-- input from this log by (source_partition, inbox_offset). Bytewax recovery snapshots the last
-- offset each partition handed on, so after a crash the dataflow rewinds to its last snapshot
-- and replays the log from there: nothing the broker delivered is lost. Rows are pruned once
-- a snapshot that covers them is old enough (stream.inbox_retention_s).

CREATE TABLE stream_inbox (
  source_partition text NOT NULL,
  inbox_offset     bigint NOT NULL,
  received_at      timestamptz NOT NULL,
  topic            text NOT NULL,
  payload          bytea NOT NULL,
  PRIMARY KEY (source_partition, inbox_offset)
);
COMMENT ON TABLE stream_inbox IS 'Write-ahead log of the stream''s MQTT source: messages committed before they are acknowledged to the broker.';
COMMENT ON COLUMN stream_inbox.source_partition IS 'Bytewax source partition (one MQTT client session) that received the message.';
COMMENT ON COLUMN stream_inbox.inbox_offset IS 'Position in that partition''s log, from 1, without gaps.';
COMMENT ON COLUMN stream_inbox.received_at IS 'When the stream received the message from the broker.';
COMMENT ON COLUMN stream_inbox.topic IS 'MQTT topic the message arrived on.';
COMMENT ON COLUMN stream_inbox.payload IS 'The message payload as received.';
GRANT SELECT, INSERT, DELETE ON stream_inbox TO fleet_ingest;

-- Dead letters become idempotent like every other table the stream writes: a replay after a
-- restart re-derives the same rejects from the same inbox rows, and this key drops the repeats.
-- `time` is the inbox receive time (stable across replays), not the moment of rejection.
ALTER TABLE ingest_rejects
  ADD COLUMN source_partition text,
  ADD COLUMN inbox_offset bigint,
  ADD COLUMN sample_seq bigint NOT NULL DEFAULT -1;
COMMENT ON COLUMN ingest_rejects.source_partition IS 'Stream inbox partition of the message (NULL for rejects not from the inbox).';
COMMENT ON COLUMN ingest_rejects.inbox_offset IS 'Stream inbox offset of the message.';
COMMENT ON COLUMN ingest_rejects.sample_seq IS 'Sequence number of the rejected sample, -1 when the whole message was rejected.';
CREATE UNIQUE INDEX idx_ingest_rejects_idempotency
  ON ingest_rejects (source_partition, inbox_offset, sample_seq, time);
