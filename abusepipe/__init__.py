"""abusepipe: abuse-report ingestion pipeline (CLI, settings and the error hierarchy)."""

__version__ = "0.1.0"
