"""`python -m jtwin` is the `jtwin` command."""
from jtwin.cli import main

raise SystemExit(main())
