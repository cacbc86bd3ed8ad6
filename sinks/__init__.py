"""Sinks: publishers (Kafka) and the SQL store that reports are written to."""
