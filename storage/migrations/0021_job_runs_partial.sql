-- Issue #24, finding 2: a run in which some parts failed (a tenant-day not archived) is not a
-- success. It ends 'partial', with the failures in details and the first of them in error.
ALTER TABLE job_runs DROP CONSTRAINT job_runs_status_check;
ALTER TABLE job_runs ADD CONSTRAINT job_runs_status_check
  CHECK (status IN ('running', 'succeeded', 'partial', 'failed'));
COMMENT ON COLUMN job_runs.status IS 'running, succeeded, partial (it finished, but details.failures lists parts that did not: the first is in error) or failed.';
