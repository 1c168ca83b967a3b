"""The Dagster code location (workspace.yaml loads `defs` from here)."""

import dagster as dg

from gonka_pipelines.defs.assets.block import block, block_proposal
from gonka_pipelines.defs.assets.intake import epoch_tasks
from gonka_pipelines.defs.checks import proposal_links_and_verifies
from gonka_pipelines.defs.jobs import epoch_job
from gonka_pipelines.defs.resources import ChainResource

defs = dg.Definitions(
    assets=[epoch_tasks, block_proposal, block],
    asset_checks=[proposal_links_and_verifies],
    jobs=[epoch_job],
    resources={"chain": ChainResource()},
    executor=dg.in_process_executor,
)
