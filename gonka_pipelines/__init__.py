"""gonka_pipelines: run and audit the epochs of a Gonka-style AI-compute network with Dagster and DuckDB."""
