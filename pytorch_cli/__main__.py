"""`python -m pytorch_cli`, and the `ptrain` script's entry: a Ctrl-C while the command's modules
import (its first fraction of a second) exits 130 as a stop, without Python's traceback of
the import (a hostile trial's 14 lines)."""

import sys


def entry() -> None:
    try:
        from pytorch_cli.commands.cli import main
    except KeyboardInterrupt:
        sys.exit(130)
    main()


if __name__ == "__main__":
    entry()
