from stimpute._cli import main

raise SystemExit(main())
