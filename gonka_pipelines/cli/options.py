"""The option every command takes, --data-dir, and the chain folder it names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gonka_pipelines.local.paths import DATA_DIR_ENV, DEFAULT_DATA_DIR, DataLayout

DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", show_default=False, help=f"chain folder, before or after the command (default: ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR})")]


def chain_folder(data_dir: Path | None) -> DataLayout:
    """The chain folder --data-dir names (app.py makes one given before the command the default of the command's own),
    else $GONKA_DATA_DIR's, else the repository's data/."""
    return DataLayout(data_dir.resolve()) if data_dir else DataLayout.from_env()
