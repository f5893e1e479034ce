"""The HTTP service: a saved recommendation pipeline, real-time event ingest, a dashboard."""
