"""`tenfold cloud run` and `logs`: sync the project and its data, run a command detached on the instance, stream
its log, and fetch the results back. Works on any ssh host (`--host`), an AWS instance being one of them.

On the host, under REMOTE (default ~/tenfold): work/ is a copy of the local working directory (without what
.gitignore excludes), data/ holds the synced data sets, job/ the job's spec, log, pid and exit status, and
agent.py (tenfold/cloud/agent.py, copied over) runs the job, resumes it after an interruption and enforces the
guardrails there.
"""
from __future__ import annotations

import base64
import datetime
import gzip
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tenfold.errors import CloudError
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


def agent(host: str, *command: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run tenfold's agent on the host (python3 REMOTE/agent.py REMOTE COMMAND)."""
    root = remote_root()
    return ssh(host, f"python3 {root}/agent.py {root} {' '.join(command)}", check=check)


def install_agent(host: str, settings: dict | None = None) -> None:
    """Copy the agent to the host; with `settings`, write its guardrails and (re)start its watcher."""
    root = remote_root()
    ssh(host, f"mkdir -p {root}/work {root}/data {root}/job")
    rsync(str(Path(__file__).with_name("agent.py")), f"{host}:{root}/agent.py")
    if settings is not None:
        write_remote(host, f"{root}/agent.json", json.dumps(agent_settings(settings), indent=1))
        agent(host, "restart")


def agent_settings(settings: dict) -> dict:
    """The agent's settings, with $TENFOLD_AGENT_OVERRIDES (JSON) on top: how the tests make its stop harmless."""
    return {**settings, **json.loads(os.environ.get("TENFOLD_AGENT_OVERRIDES") or "{}")}


def boot_script(settings: dict) -> str:
    """EC2 user data: at the instance's first boot (cloud-init, as root) install the agent with its guardrails
    and start it, so they hold even if this machine never connects (`up --no-wait`, a laptop gone)."""
    source = base64.b64encode(gzip.compress(Path(__file__).with_name("agent.py").read_bytes())).decode()
    return "\n".join([
        "#!/bin/bash",
        "# tenfold: the agent (idle stop, max hours, spot-interruption recovery) from the first boot",
        "set -eu",
        'RUN_AS="${TENFOLD_USER:-ubuntu}"',  # the Deep Learning AMI's login
        f'ROOT="${{TENFOLD_ROOT:-/home/$RUN_AS/{DEFAULT_REMOTE}}}"',
        'mkdir -p "$ROOT/job"',
        f'echo {source} | base64 -d | gunzip > "$ROOT/agent.py"',
        f"cat > \"$ROOT/agent.json\" <<'TENFOLD_JSON'\n{json.dumps(agent_settings(settings))}\nTENFOLD_JSON",
        'chown -R "$RUN_AS:" "$ROOT"',
        'if [ "$(id -un)" = "$RUN_AS" ]; then python3 "$ROOT/agent.py" "$ROOT" ensure; '
        'else sudo -u "$RUN_AS" -H python3 "$ROOT/agent.py" "$ROOT" ensure; fi', ""])


def write_remote(host: str, path: str, text: str, private: bool = False) -> None:
    """Write a file on the host atomically (private: readable by its owner only)."""
    umask = "umask 077 && " if private else ""
    r = subprocess.run(ssh_command(host, f"{umask}cat > {path}.tmp && mv {path}.tmp {path}"), input=text,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise CloudError(f"cannot write {path} on {host}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")


def is_tenfold_train(command: list[str]) -> int | None:
    """The index of `train` in `tenfold train ...` or `python -m tenfold train ...`, else None."""
    if len(command) >= 2 and Path(command[0]).name == "tenfold" and command[1] == "train":
        return 1
    if len(command) >= 4 and command[1:3] == ["-m", "tenfold"] and command[3] == "train":
        return 3
    return None


def flag(command: list[str], name: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == name and i + 1 < len(command):
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def job_spec(command: list[str], stamp: str) -> dict:
    """The job: its command, and for `tenfold train` the run directory and the command that resumes it."""
    at = is_tenfold_train(command)
    if at is None:
        return {"command": command, "resume": None, "run_dir": None}
    run_dir = flag(command, "--resume")
    if run_dir:
        return {"command": command, "resume": command, "run_dir": run_dir}
    run_dir = flag(command, "--out")
    if run_dir is None:  # name it now: the resume command must know where the checkpoints go
        model = flag(command, "--model") or "lenet5"
        run_dir = f"runs/{Path(model.rsplit(':', 1)[-1]).name}-{stamp}"
        command = [*command, "--out", run_dir]
    keep = [x for f in ("--epochs", "--device", "--devices", "--max-restarts") if flag(command, f)
            for x in (f, flag(command, f))]  # the same workers and restarts, on the same run
    switches = [s for s in ("--quiet", "--report", "--tensorboard") if s in command]
    resume = [*command[:at + 1], "--resume", run_dir, *keep, *switches]
    return {"command": command, "resume": resume, "run_dir": run_dir}


def start(host: str, command: list[str], workdir: Path) -> dict:
    """Sync the project and data, then start the command detached: it outlives this ssh session and the laptop."""
    if not command:
        raise CloudError("nothing to run: give the command after --, e.g. tenfold cloud run -- tenfold train")
    root = remote_root()
    install_agent(host)
    if agent(host, "state").stdout.strip() == "running":
        raise CloudError(f"a job is still running on {host}: follow it with `tenfold cloud logs`, or wait for it")
    rsync(f"{workdir}/", f"{host}:{root}/work/", "--delete", "--filter=:- .gitignore", "--exclude=.git/")
    spec = job_spec(sync_data(host, command), datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    ssh(host, f"rm -f {root}/job/exit {root}/job/log {root}/job/interrupted {root}/job/pid")
    write_remote(host, f"{root}/job/spec.json", json.dumps(spec))
    if agent(host, "start-job", check=False).returncode != 0:
        raise CloudError(f"the job did not start on {host}: see {root}/job/log there")
    return spec


def resume(host: str) -> str:
    """Continue the job an interruption cut short; says what the job is doing now."""
    install_agent(host)
    state = agent(host, "resume").stdout.strip()
    if state == "none":
        raise CloudError(f"no job to resume on {host}: start one with `tenfold cloud run -- COMMAND`")
    return state


def follow(host: str, stream=None) -> int:
    """Print the job's log as it grows until the job ends; returns its exit status."""
    root, stream = remote_root(), stream or sys.stdout
    if agent(host, "state", check=False).stdout.strip() in ("none", ""):
        raise CloudError(f"no job on {host}: start one with `tenfold cloud run -- COMMAND`")
    cmd = ssh_command(host, f"python3 {root}/agent.py {root} follow")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            stream.write(line)
            stream.flush()
    state = agent(host, "state", check=False)
    if state.returncode != 0:
        raise CloudError(f"lost {host} while following the job (the instance stopped?); it resumes from its last "
                         "finished epoch with `tenfold cloud run --resume`")
    if state.stdout.strip() == "interrupted":
        raise CloudError(f"the job on {host} was interrupted (spot notice, --max-hours, or a stop); continue it "
                         "from its last finished epoch with `tenfold cloud run --resume`")
    return int(ssh(host, f"cat {root}/job/exit").stdout.strip())


def fetch(host: str, workdir: Path) -> list[str]:
    """Copy the job's results (run directories) back into the local working directory."""
    root, got = remote_root(), []
    for name in RESULTS:
        if ssh(host, f"test -d {root}/work/{name}", check=False).returncode == 0:
            rsync(f"{host}:{root}/work/{name}/", f"{workdir / name}/")
            got.append(name)
    return got
