"""The Dagster layer, in dg's layout: every module here is loaded by `gonka_pipelines.definitions`."""
