"""``python -m configspec`` runs the CLI."""

import sys

from configspec.cli.main import main

sys.exit(main())
