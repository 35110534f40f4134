"""Run the stimpute command line with ``python -m stimpute``."""

from stimpute._cli import main

raise SystemExit(main())
