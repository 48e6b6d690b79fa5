"""Starting `tenfold serve`: load the run, bind the address ourselves (a clear error when it is taken), run uvicorn."""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
import warnings
from pathlib import Path

from PIL import Image

from tenfold import envvars
from tenfold.errors import TenfoldError
from tenfold.fileio import run_busy
from tenfold.log import warn

def listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 takes a free one. TenfoldError for an address that cannot be
    had (taken, not this machine's, a privileged port)."""
    if not 0 <= port <= 65535:
        raise TenfoldError(f"--port must be 0-65535, got {port}")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        return socket.create_server(address, family=family, backlog=128)
    except socket.gaierror as e:
        raise TenfoldError(f"--host {host}: not an address of this machine ({e.strerror})") from e
    except OSError as e:
        hint = "; another server has it: pick another --port (0: any free one)" if e.errno == errno.EADDRINUSE else ""
        raise TenfoldError(f"cannot listen on {host}:{port}: {e.strerror}{hint}") from e


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          tta: int | None = None) -> None:
    """Serve run `run_dir` on http://host:port until Ctrl-C. Raises TenfoldError (missing extra, bad address),
    CheckpointError (not a run)."""
    try:
        import uvicorn

        from tenfold.serve.app import Predictor, make_app
    except ImportError as e:
        raise TenfoldError(f"tenfold serve needs starlette, uvicorn and python-multipart "
                           f"(pip install 'tenfold[export]'); {e.name or e}: missing or broken") from e
    from tenfold.training.infer import load_trained
    trained = load_trained(run_dir, device)
    if run_busy(Path(run_dir)):
        warn(f"{run_dir} is still training: serving its epoch {trained.ckpt['epoch']}; start the server again "
             "for later epochs")
    app = make_app(Predictor(trained, tta, Path(run_dir).resolve().name))
    sock = listen(host, port)
    shown = f"[{sock.getsockname()[0]}]" if sock.family == socket.AF_INET6 else sock.getsockname()[0]
    print(f"serving {run_dir} at http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C to stop)", flush=True)
    if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
        warn(f"--host {host}: anyone who can reach this machine can use the model (there is no login)")
    # uvicorn's own log: its tracebacks (a request cut short by Ctrl-C, say) only with TENFOLD_DEBUG=1; a failed
    # request is answered, and said in one line, by the app (tenfold.serve.app.server_error)
    level = "warning" if os.environ.get(envvars.DEBUG) else "critical"
    server = uvicorn.Server(uvicorn.Config(app, log_level=level, access_log=False, timeout_graceful_shutdown=2))
    with warnings.catch_warnings():  # Pillow's DecompressionBombWarning: a big image is decoded all the same
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        server.run(sockets=[sock])
    sys.stdout.flush()
