"""``python -m tikmix``: the command-line interface (see :mod:`tikmix.cli`)."""

from tikmix.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
