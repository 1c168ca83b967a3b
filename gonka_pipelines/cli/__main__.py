"""`python -m gonka_pipelines.cli`: the `gonka` script."""

import sys

from gonka_pipelines.cli.app import main

sys.exit(main())
