"""`python -m archspec.cli` is `archspec`."""

from . import main

raise SystemExit(main())
