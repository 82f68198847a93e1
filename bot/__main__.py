"""Run ``python -m bot``: the same as the ``vaxbot`` command."""

from bot.cli import main

raise SystemExit(main())
