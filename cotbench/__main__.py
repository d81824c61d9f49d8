from cotbench.cli import main

raise SystemExit(main())
