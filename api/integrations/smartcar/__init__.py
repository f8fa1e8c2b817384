"""Smartcar: Connect consent, pulls, lock/unlock commands and webhooks, in API v3 and 2.0.

The default is API v3 (setting ``integrations.smartcar_api_version``); 2.0 is kept for
deployments that select "2.0" and for vehicles connected under 2.0 before a switch
(docs/integrations.md). The setting decides how new consents are taken; reads, commands and
the puller use the version each vehicle was connected with.

The same file names as every vendor package, each holding both versions side by side:
`client` (the HTTP calls and their shapes), `signals` (the signal tables: Smartcar bodies and
webhook deliveries -> samples), `consent` (what a consent leaves us: a 2.0 token pair or a
v3 owner id), `puller` (the polling pass that publishes telemetry), `routes` (the HTTP
endpoints, webhook HMAC included). HTTP/retry (`api.integrations.http.VendorHttp`) and
publishing (`api.integrations.publisher`) are shared with the other vendors.
"""
