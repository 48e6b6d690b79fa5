"""'The instance': a real OpenSSH server on 127.0.0.1 with its own host key, reached through the test HOME's
~/.ssh/config, which maps tenfold's host names to it (as a user maps a bastion). Keys are authorised as a
cloud instance's boot would install them: when the test says so."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
VENV_BIN = Path(os.path.abspath(sys.executable)).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SshServer:
    def __init__(self, root: Path, path: str | None = None, port: int | None = None):
        """`port`: a given one (a new machine at a reused address), else a free one."""
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.authorized = root / "authorized_keys"
        self.authorized.write_text("")
        if not (root / "host_ed25519").exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_ed25519")], check=True)
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_ed25519'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {self.authorized}", "StrictModes no", "UsePAM no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            "LogLevel ERROR",
            # the instance's tools on its PATH, as a Deep Learning AMI's environment puts them (this checkout's
            # tenfold, python and jupyter), and a tenfold cache of the instance's own
            f"SetEnv PATH={path or f'{VENV_BIN}:/usr/local/bin:/usr/bin:/bin'} TENFOLD_HOME={root / 'tenfold-home'}",
            ""]))
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {self.proc.stderr.read()}")
            time.sleep(0.05)

    def user_config(self) -> str:
        """What the test HOME's ~/.ssh/config says before tenfold adds its own blocks."""
        return f"Host tenfold-*\n    HostName 127.0.0.1\n    Port {self.port}\n    User root\n\n"

    def authorize(self, private_key: Path) -> None:
        public = subprocess.run(["ssh-keygen", "-y", "-f", str(private_key)], capture_output=True, text=True,
                                check=True).stdout
        with open(self.authorized, "a") as f:
            f.write(public)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def power_off(remote: Path) -> None:
    """End the agent, the job and the notebook server on "the instance", as a machine stopping would."""
    pids = [remote / "agent.pid", remote / "job" / "pid"]
    notebook = remote / "notebook.json"
    for pid_file in pids + ([notebook] if notebook.exists() else []):
        try:
            text = pid_file.read_text()
            pid = json.loads(text)["pid"] if pid_file == notebook else int(text)
            os.killpg(pid, signal.SIGKILL)  # each runs in a session (and process group) of its own
        except (OSError, ValueError, KeyError):
            continue
