"""`python -m galexplore` runs the command-line interface."""

from galexplore.cli import main

raise SystemExit(main())
