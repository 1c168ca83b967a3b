"""The `gonka` command line (typer; help and usage errors rendered by rich): the app, its --data-dir and how it ends on a
user's error (app.py), and the commands by concern: the chain (chain.py, epoch runs in runs.py), audits (audit.py), the
lab (lab.py)."""

from gonka_pipelines.cli.app import main

__all__ = ["main"]
