"""``python -m gui [--db PATH]``: open the MetaStudio window."""

from __future__ import annotations

import argparse
import sys

from gui.app import main


def _cli(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m gui", description="Open the MetaStudio window.")
    parser.add_argument("--db", metavar="PATH", help="run database (default: METASTUDIO_DB or the user data folder)")
    args, qt_args = parser.parse_known_args(argv[1:])
    return main([argv[0], *qt_args], db_path=args.db)


if __name__ == "__main__":
    sys.exit(_cli())
