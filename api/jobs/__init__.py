"""Scheduled jobs of the API service: one runner across replicas (a PostgreSQL advisory lock).

Jobs: the Samsara and Smartcar pullers (long-running), the maintenance scheduler (daily),
retention with the cold archive to Azure Blob (daily) and rollup refresh (every few minutes).
See docs/jobs.md.
"""
