from syslrn.cli import main

raise SystemExit(main())
