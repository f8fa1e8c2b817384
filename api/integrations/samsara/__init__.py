"""Samsara pull ingestion: vehicle stats feeds into the wire contract, safety events into
`video_events`.

The same file names as every vendor package: `client` (the REST calls and their shapes),
`signals` (the stat-type table: Samsara stats -> sample fields), `puller` (one tenant's feeds
and safety poll), `routes` (the tenant's API token endpoint). The supervision of every
tenant's puller is `api.integrations.services`. See docs/integrations.md.
"""
