import os
import sys

from tenfold.cli import main

code = main()
if code and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
    # A failed worker of a distributed run: everything it saved is already closed; end now, skipping the
    # destructors of a process group whose peers are gone (they may abort the process from a native thread).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
