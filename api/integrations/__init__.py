"""Vendor integrations: Samsara and Smartcar pull ingestion, published in the wire contract.

Pulled data never goes to the database directly: it is converted to `core.protocol`
Telemetry batches and published to MQTT, so the stream treats it like gateway data
(DESIGN.md decision 3). See docs/integrations.md.
"""
