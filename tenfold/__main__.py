from tenfold.cli import main

raise SystemExit(main())
