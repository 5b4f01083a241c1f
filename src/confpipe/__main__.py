"""``python -m confpipe``: the command line (see confpipe.cli.main)."""

from confpipe.cli.main import main

if __name__ == "__main__":
    main()
