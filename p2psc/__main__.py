"""``python -m p2psc`` is the same as the ``p2psc`` command."""

from p2psc.cli import main

raise SystemExit(main())
