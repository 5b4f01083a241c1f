"""``python -m confpipe.worker <job folder URL>``: the command every job runs (the worker
itself is ``confpipe.backends.worker``); kept here, beside ``__main__``, as an entry point."""

import sys

from confpipe.backends.worker import main

if __name__ == "__main__":
    sys.exit(main())
