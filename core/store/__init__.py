"""Persistence: every SQL statement, the schema and the stored image files. No torch."""
