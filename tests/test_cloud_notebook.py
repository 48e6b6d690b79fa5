"""`tenfold cloud notebook`: a real Jupyter server on "the instance" (this machine through a real sshd),
listening on its loopback only, with a token, reached through a real ssh tunnel."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from helpers import assert_one_line_error, run_cli
from ssh_testbed import SshServer


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def open_notebook(project):
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "notebook", "--host", "box"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), (url, proc.poll() is not None and proc.stderr.read())
    return proc, url


def test_jupyter_through_an_ssh_tunnel_with_a_token(box):
    proc, url = open_notebook(box["project"])
    try:
        parts = urlsplit(url)
        assert parts.path == "/lab" and parts.query.startswith("token=")
        token = parts.query.split("=", 1)[1]
        base = f"{parts.scheme}://{parts.netloc}"
        assert get(f"{base}/api/status?token={token}") == 200     # through the tunnel, with the token
        assert get(f"{base}/api/status") == 403                    # without it: refused
        info = json.loads((box["remote"] / "notebook.json").read_text())
        cmdline = open(f"/proc/{info['pid']}/cmdline", "rb").read().split(b"\0")
        assert b"--ip=127.0.0.1" in cmdline and token.encode() not in b" ".join(cmdline)  # no token in `ps`
        assert oct((box["remote"] / "notebook.json").stat().st_mode & 0o777) == "0o600"
        proc.send_signal(signal.SIGINT)                             # Ctrl-C: the tunnel closes ...
        assert proc.wait(timeout=30) == 0
        assert get_refused(base)
        again, url2 = open_notebook(box["project"])                 # ... the server runs on: reattached
        assert urlsplit(url2).query == parts.query
        again.send_signal(signal.SIGTERM)                           # a SIGTERM closes the tunnel too
        assert again.wait(timeout=30) == 143
        assert get_refused(f"http://{urlsplit(url2).netloc}")
    finally:
        if proc.poll() is None:
            proc.terminate()  # the CLI closes its tunnel on SIGTERM too
            proc.wait(timeout=30)
    stopped = run_cli("cloud", "notebook", "--host", "box", "--stop", cwd=box["project"])
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{info['pid']}") and open(f"/proc/{info['pid']}/stat").read().split()[2] != "Z":
        assert time.monotonic() < deadline, "the notebook server did not stop"
        time.sleep(0.1)


def get_refused(base: str) -> bool:
    try:
        urllib.request.urlopen(f"{base}/api/status", timeout=10)
    except urllib.error.HTTPError:
        return False
    except OSError:
        return True
    return False


def test_no_jupyter_on_the_host_is_one_line(box, tmp_path):
    bare = SshServer(tmp_path / "bare", path="/usr/bin:/bin")  # a host with no jupyter on its PATH
    config = tmp_path / "home" / ".ssh" / "config"
    config.write_text(config.read_text().replace("Host box\n", f"Host bare\n    Port {bare.port}\nHost box bare\n", 1))
    bare.authorize(box["key"])
    try:
        result = run_cli("cloud", "notebook", "--host", "bare", cwd=box["project"])
    finally:
        bare.close()
    assert_one_line_error(result, "Jupyter is not installed on bare", "pip install jupyterlab")
