"""``python -m taogate.cli``: the ``taogate`` command (how the tests and benchmarks start it)."""

from taogate.cli import main

if __name__ == "__main__":  # pragma: no cover - run as a module in subprocesses
    main()
