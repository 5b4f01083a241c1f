"""``python -m confpipe.backends.vm <job folder URL>``: the command every cloud job runs (the
VM's work is ``confpipe.backends.gcp.vm``).

The name is a contract with container images: an image built with an earlier confpipe runs
this module before the staged code is installed, and a restarted driver recognises its live
jobs by this command (``batch_request.job_dir_of``). Kept here, where earlier releases had
it, as ``confpipe.worker`` is kept for the worker.
"""

import sys

from confpipe.backends.gcp.vm import main

if __name__ == "__main__":
    sys.exit(main())
