from mrnet.cli import main

raise SystemExit(main())
