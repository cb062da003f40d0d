"""``python -m core.engine``: generate one image per variant (see ``core.engine.cli``)."""

from core.engine.cli import main

raise SystemExit(main())
