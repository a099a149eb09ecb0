"""``python -m hilctl``: the same as the ``hilctl`` console script."""

from hilctl.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
