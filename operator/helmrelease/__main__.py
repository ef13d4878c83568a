"""``python -m helmrelease`` is the same as the ``helmrelease`` console script."""

from helmrelease.cli import main

raise SystemExit(main())
