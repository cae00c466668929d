"""``python -m mill.cli`` (what torchrun launches)."""

from mill.cli.main import main

if __name__ == "__main__":
    main()
