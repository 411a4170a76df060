"""``python -m addvocals_async``: the same as the ``addvocals`` command."""

from .cli import main

raise SystemExit(main())
