"""``python -m confpipe``: the command line (see cli.py)."""

from confpipe.cli.main import main

if __name__ == "__main__":
    main()
