"""`tenfold cloud notebook`: Jupyter on the instance, listening on its 127.0.0.1 only and guarded by a token,
reached through an SSH tunnel from this machine's 127.0.0.1. Nothing is opened in the security group.

The server runs detached in REMOTE/work (it survives the tunnel closing); REMOTE/notebook.json (0600) holds its
port, token and pid so a second `notebook` reattaches to it instead of starting another.
"""
from __future__ import annotations

import json
import secrets
import socket
import subprocess

from tenfold.cloud.jobs import agent, install_agent, remote_root, ssh, write_remote
from tenfold.cloud.remote import ssh_command
from tenfold.errors import CloudError
from tenfold.polling import wait_until
from tenfold.log import note

START_WAIT = 120  # seconds for Jupyter to answer on the instance (a first start builds its caches)


def running(host: str) -> dict | None:
    """The notebook server tenfold started on the host, if it still runs."""
    out = agent(host, "notebook").stdout.strip()
    return json.loads(out) if out else None


def launch(host: str) -> dict:
    """Start Jupyter on the host's 127.0.0.1 at a free port, with a fresh token; wait until it answers."""
    root = remote_root()
    app = ssh(host, "command -v jupyter-lab >/dev/null && echo lab || "
                    "(command -v jupyter-notebook >/dev/null && echo notebook) || "
                    "(command -v jupyter-server >/dev/null && echo server) || echo none", check=False).stdout.strip()
    if app not in ("lab", "notebook", "server"):
        raise CloudError(f"Jupyter is not installed on {host}: install it there, e.g. "
                         "`tenfold cloud run -- python3 -m pip install jupyterlab`")
    port = int(agent(host, "free-port").stdout)
    token = secrets.token_hex(24)
    # The token travels in the environment, not on the command line, where any user of the host could read it.
    # A root login (a host of the user's own) needs --allow-root: safe here, the server answers on loopback only.
    # `cd X && job &` would background a subshell that holds the ssh channel open: cd first, then one command.
    pid = ssh(host, f"cd {root}/work || exit 1; JUPYTER_TOKEN={token} nohup setsid jupyter {app} --no-browser "
                    f"--ip=127.0.0.1 --port={port} --ServerApp.port_retries=0 "
                    f"$([ \"$(id -u)\" = 0 ] && echo --allow-root) > {root}/notebook.log 2>&1 "
                    "< /dev/null & echo $!").stdout.strip()
    info = {"port": port, "token": token, "pid": int(pid), "app": app}
    def answers() -> bool | None:
        if agent(host, "probe", str(port), check=False).returncode == 0:
            return True
        return False if ssh(host, f"kill -0 {pid}", check=False).returncode != 0 else None  # False: it died
    if not wait_until(answers, START_WAIT, 1.0):
        tail = ssh(host, f"tail -n 1 {root}/notebook.log", check=False).stdout.strip()
        raise CloudError(f"Jupyter did not start on {host}: {tail or 'no output'} (see {root}/notebook.log)")
    write_remote(host, f"{root}/notebook.json", json.dumps(info), private=True)  # the token is a password
    return info


def local_port(wanted: int | None) -> int:
    """The port asked for (it must be free), else 8888 when free, else any free one."""
    for port in ([wanted] if wanted else [8888, 0]):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                if wanted:
                    raise CloudError(f"--port {wanted} is in use on this machine: choose another")
    raise CloudError("no free local port")  # unreachable: port 0 always binds


def tunnel(host: str, port: int, remote_port: int) -> subprocess.Popen:
    command = ssh_command(host)[:-1] + [
        "-N",                                   # no remote command: only the forwarding
        "-o", "ExitOnForwardFailure=yes",       # fail at once if the local port cannot be bound
        "-L", f"127.0.0.1:{port}:127.0.0.1:{remote_port}",  # this machine's loopback to the instance's
        host]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    def open_() -> bool | None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        return False if proc.poll() is not None else None  # False: ssh gave up
    try:
        if not wait_until(open_, 30, 0.1):
            proc.kill()
            why = (proc.stderr.read().strip().splitlines() or ["no answer"])[-1]
            raise CloudError(f"the ssh tunnel to {host} failed: {why}")
        return proc
    except BaseException:  # Ctrl-C or SIGTERM while it opens: no tunnel left behind either
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise


def stop(host: str) -> bool:
    info = running(host)
    if info:
        ssh(host, f"kill {info['pid']}; rm -f {remote_root()}/notebook.json", check=False)
    return info is not None


def notebook(host: str, port: int | None = None, name: str | None = None) -> int:
    """Start (or find) Jupyter on the host, open the tunnel, print the URL, and hold the tunnel until Ctrl-C."""
    install_agent(host)
    info = running(host) or launch(host)
    here = local_port(port)
    proc = tunnel(host, here, info["port"])
    try:  # from the moment the tunnel is open: a signal while the URL prints must close it too
        path = {"lab": "lab", "notebook": "tree"}.get(info["app"], "")
        print(f"http://127.0.0.1:{here}/{path}?token={info['token']}", flush=True)
        note(f"Jupyter on {host} through an ssh tunnel; Ctrl-C closes the tunnel (the server keeps "
             f"running; `tenfold cloud notebook {name or host} --stop` stops it)")
        proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:  # Ctrl-C, SIGTERM or an error: never leave the tunnel behind
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    raise CloudError(f"the ssh tunnel to {host} closed ({(proc.stderr.read().strip().splitlines() or ['?'])[-1]})")
