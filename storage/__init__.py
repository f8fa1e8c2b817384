"""Storage: the TimescaleDB/PostGIS schema (versioned SQL migrations) and its access code."""
