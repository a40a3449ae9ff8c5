"""The span schema, the Parquet lake on disk and the DuckDB views over it."""
