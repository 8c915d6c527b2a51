"""``python -m solidrec`` entry point."""

from solidrec.cli import main

raise SystemExit(main())
