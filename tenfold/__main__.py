import os
import sys

from tenfold.cli import main

code = main()
if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    # A worker of a distributed run: everything it wrote is closed and synced. End now, skipping the
    # interpreter's teardown, where the native threads of a process group whose peers are exiting too (or are
    # gone, after a failure) can abort the process.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
