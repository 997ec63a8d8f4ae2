from clipbd.cli import main

raise SystemExit(main())
