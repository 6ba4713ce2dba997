"""``python -m runflow.server``: the same as ``runflow serve``."""

from __future__ import annotations

from runflow.server._cli import main

if __name__ == "__main__":  # pragma: no cover - run as a program
    main()
