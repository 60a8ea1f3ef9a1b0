"""`python -m ace_companion ...` is the `ace-companion` console command."""

from ace_companion.cli import main

raise SystemExit(main())
