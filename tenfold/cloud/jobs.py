"""`tenfold cloud run` and `logs`: sync the project and its data, run a command detached on the instance, stream
its log, and fetch the results back. Works on any ssh host (`--host`), an AWS instance being one of them.

On the host, under REMOTE (default ~/tenfold): work/ is a copy of the local working directory (without what
.gitignore excludes), data/ holds the synced data sets, job/ the running job's log, pid and exit status.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from tenfold.cloud.aws import CloudError
from tenfold.cloud.remote import ssh_command

DEFAULT_REMOTE = "tenfold"  # relative to the login's home directory
RESULTS = ["runs"]          # fetched back after a job: tenfold's run directories


def remote_root() -> str:
    return os.environ.get("TENFOLD_REMOTE_DIR") or DEFAULT_REMOTE


def ssh_for_rsync() -> str:
    return " ".join(shlex.quote(a) for a in ssh_command("")[:-1])  # ssh -F config -o ... (no host)


def rsync(src: str, dest: str, *extra: str) -> None:
    cmd = ["rsync", "-az", "--partial", "-e", ssh_for_rsync(), *extra, src, dest]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CloudError("rsync is not installed here: install it (e.g. `apt install rsync`)") from None
    if r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise CloudError(f"rsync to/from the instance failed: {lines[0] if lines else r.returncode}")


def ssh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(ssh_command(host, script), capture_output=True, text=True)
    if check and r.returncode != 0:
        lines = r.stderr.strip().splitlines()
        raise CloudError(f"ssh {host} failed: {lines[-1] if lines else f'exit {r.returncode}'}")
    return r


def sync_data(host: str, command: list[str]) -> list[str]:
    """Send each local path given to --data to REMOTE/data/ and point the command at the copy."""
    out, root = list(command), remote_root()
    for i, arg in enumerate(command[:-1]):
        if arg == "--data" and Path(command[i + 1]).exists():
            local = Path(command[i + 1]).resolve()
            rsync(str(local) + ("/" if local.is_dir() else ""), f"{host}:{root}/data/{local.name}" +
                  ("/" if local.is_dir() else ""))
            out[i + 1] = f"../data/{local.name}"  # the job runs in REMOTE/work
    return out


def start(host: str, command: list[str], workdir: Path) -> None:
    """Sync the project, then start the command detached: it outlives this ssh session and the laptop."""
    if not command:
        raise CloudError("nothing to run: give the command after --, e.g. tenfold cloud run -- tenfold train")
    root = remote_root()
    ssh(host, f"mkdir -p {root}/work {root}/data {root}/job")
    running = ssh(host, f"test -f {root}/job/pid && kill -0 $(cat {root}/job/pid) 2>/dev/null", check=False)
    if running.returncode == 0:
        raise CloudError(f"a job is still running on {host}: follow it with `tenfold cloud logs`, or wait for it")
    rsync(f"{workdir}/", f"{host}:{root}/work/", "--delete", "--filter=:- .gitignore", "--exclude=.git/")
    command = sync_data(host, command)
    job = " ".join(shlex.quote(c) for c in command)
    # All three descriptors redirected and a new session: ssh returns at once and the job survives hang-ups.
    script = (f"cd {root}/work && rm -f ../job/exit && "
              f"nohup setsid sh -c {shlex.quote(job + '; echo $? > ../job/exit')} "
              f"> ../job/log 2>&1 < /dev/null & echo $! > {root}/job/pid")
    ssh(host, script)


def follow(host: str, stream=None) -> int:
    """Print the job's log as it grows until the job ends; returns its exit status."""
    root, stream = remote_root(), stream or sys.stdout
    cmd = ssh_command(host, f"tail -n +1 -f --pid=$(cat {root}/job/pid) {root}/job/log")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            stream.write(line)
            stream.flush()
    status = ssh(host, f"cat {root}/job/exit 2>/dev/null || echo none", check=False).stdout.strip()
    if status == "none" or not status.lstrip("-").isdigit():
        raise CloudError(f"the job on {host} ended without an exit status (the instance stopped?); "
                         "its finished epochs are in its run directory")
    return int(status)


def fetch(host: str, workdir: Path) -> list[str]:
    """Copy the job's results (run directories) back into the local working directory."""
    root, got = remote_root(), []
    for name in RESULTS:
        if ssh(host, f"test -d {root}/work/{name}", check=False).returncode == 0:
            rsync(f"{host}:{root}/work/{name}/", f"{workdir / name}/")
            got.append(name)
    return got
