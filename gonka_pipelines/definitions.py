"""The Dagster code location: everything under defs/, with the chain and compute resources and in-process execution."""

from pathlib import Path

import dagster as dg

from gonka_pipelines.defs.resources import ChainResource, ComputeResource

defs = dg.Definitions.merge(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
    dg.Definitions(resources={"chain": ChainResource(), "compute": ComputeResource()}, executor=dg.in_process_executor),
)
