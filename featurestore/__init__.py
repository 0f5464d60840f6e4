"""Feature store: datasets -> decoded images -> registered extractors -> Parquet shards -> DuckDB views."""
