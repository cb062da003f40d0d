"""``python -m core.engine``: generate one image per variant (see ``core.engine.generation``)."""

from core.engine.generation import main

raise SystemExit(main())
