"""`tenfold cloud run` and `logs`: sync the project and its data, run a command detached on the instance, stream
its log, and fetch the results back. Works on any ssh host (`--host`), an AWS instance being one of them.

On the host, under REMOTE (default ~/tenfold): work/NAME-ID is a copy of the local project folder NAME (without
what .gitignore or .tenfoldignore exclude, virtual environments and caches), data/ holds the synced data sets,
job/ the job's spec, log, pid and exit status, and agent.py (tenfold/cloud/agent.py, copied over) runs the job,
resumes it after an interruption and enforces the guardrails there.

The upload never deletes or overwrites on the host what is newer there: a job's results (checkpoints, run
directories, anything it wrote) may exist only on the host until they are fetched.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import functools
import gzip
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tenfold import envvars
from tenfold.config import TrainConfig
from tenfold.errors import CloudError, ConfigError
from tenfold.presets import resolve_config
from tenfold.cloud.remote import ssh_command, ssh_failure
from tenfold.log import note

DEFAULT_REMOTE = "tenfold"  # relative to the login's home directory
RESULTS = ["runs"]          # fetched back after a job: tenfold's run directories
PATH_FLAGS = ("--data", "--weights")  # a command's local paths: uploaded once, to REMOTE/data
# Never uploaded: version control, Python and notebook caches, virtual environments by their usual names (any
# other folder holding a pyvenv.cfg or conda-meta/ is found by looking), Node modules.
NEVER_SYNC = [".git/", "__pycache__/", "*.pyc", ".ipynb_checkpoints/", ".pytest_cache/", ".mypy_cache/",
              ".ruff_cache/", ".tox/", ".nox/", ".venv/", "venv/", "node_modules/", ".DS_Store"]
SKIPPED_DIRS = {p.rstrip("/") for p in NEVER_SYNC if p.endswith("/")}  # not even walked into
PROGRESS = re.compile(r"^\s*([\d,]+)\s+(\d+)%\s+(\S+/s)")  # rsync --info=progress2: bytes, percent, speed


def remote_root() -> str:
    return os.environ.get(envvars.REMOTE_DIR) or DEFAULT_REMOTE


def ssh_for_rsync() -> str:
    return " ".join(shlex.quote(a) for a in ssh_command("")[:-1])  # ssh -F config -o ... (no host)


def rsync(src: str, dest: str, *extra: str, label: str | None = None) -> None:
    """rsync -a (compressed, resumable); with `label`, a live progress line on stderr, then the total size and
    what of it was sent (rsync's --stats), and the newer files --update kept."""
    cmd = ["rsync", "-az", "--partial", "-e", ssh_for_rsync(), *extra, src, dest]
    if label and rsync_progress():  # the whole transfer's progress, its total known up front; skipped files
        cmd[2:2] = ["--info=progress2,skip1", "--no-inc-recursive", "--stats"]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except FileNotFoundError:
        raise CloudError("rsync is not installed here: install it (e.g. `apt install rsync`)")
    out, kept = [], []
    for chunk in iter(lambda: proc.stdout.readline(), ""):
        for piece in chunk.split("\r"):  # progress2 rewrites one line with carriage returns
            m = PROGRESS.match(piece)
            if m and label:
                sys.stderr.write(f"\r  {label}: {m[2]:>3}% ({size(int(m[1].replace(',', '')))}, {m[3]})  ")
                sys.stderr.flush()
            elif piece.rstrip().endswith(" is newer"):  # --update left the receiver's newer copy
                kept.append(piece.rstrip()[:-len(" is newer")])
            elif piece.strip():
                out.append(piece)
    err = proc.stderr.read()
    if proc.wait() != 0:
        lines = err.strip().splitlines()
        raise CloudError(f"rsync to/from the instance failed: {lines[0] if lines else proc.returncode}")
    stats = {key: int(m[1].replace(",", "")) for key, pattern in (
        ("bytes", r"Total file size: ([\d,]+)"), ("sent", r"Total transferred file size: ([\d,]+)"))
        for m in [re.search(pattern, "\n".join(out))] if m}
    if kept:
        sys.stderr.write(f"\r  {label or 'rsync'}: kept {len(kept)} newer file(s) at the destination, not replaced "
                         f"by older ones: {', '.join(kept[:3])}{' ...' if len(kept) > 3 else ''}\n")
    if label and stats:
        sys.stderr.write(f"\r  {label}: {size(stats.get('bytes', 0))}, {size(stats.get('sent', 0))} of it sent"
                         f"{' ' * 20}\n")
    elif label:
        sys.stderr.write(f"  {label}: done\n")


@functools.lru_cache(maxsize=1)
def rsync_progress() -> bool:
    """Whether this rsync reports a whole transfer's progress (--info=progress2: rsync 3.1 and later; not the
    openrsync some macOS versions ship, nor older ones)."""
    try:
        out = subprocess.run(["rsync", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    version = re.search(r"^rsync\s+version\s+v?(\d+)\.(\d+)", out, re.MULTILINE)
    return bool(version) and (int(version[1]), int(version[2])) >= (3, 1)


def size(n: float) -> str:
    """Bytes for people: 31.4 MB (decimal units, as rsync and cloud bills count)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def ssh(host: str, script: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(ssh_command(host, script), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise CloudError(ssh_failure(host, r.stderr, r.returncode))
    return r


def local_paths(command: list[str]) -> list[tuple[int, bool, Path]]:
    """The command's local paths to upload: (index of the value, whether it was --flag=VALUE, the path)."""
    found = []
    for i, arg in enumerate(command):
        flag_name, eq, value = arg.partition("=")
        if eq and flag_name in PATH_FLAGS and Path(value).exists():
            found.append((i, True, Path(value).resolve()))
        elif arg in PATH_FLAGS and i + 1 < len(command) and Path(command[i + 1]).exists():
            found.append((i + 1, False, Path(command[i + 1]).resolve()))
    return found


def path_id(path: Path) -> str:
    """8 hex digits from a local path: its copies on the host apart from those of any other path."""
    return hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()


def remote_work(workdir: Path) -> str:
    """The project's copy on the host, relative to REMOTE: work/NAME-ID, so two projects never mix their files
    or results."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", workdir.name)[:40] or "project"
    return f"work/{name}-{path_id(workdir)}"


def remote_data(local: Path) -> str:
    """Where a local data path lives on the host, relative to REMOTE: data/ID/NAME, so two folders with one name
    never mix and each is an exact mirror of its own."""
    return f"data/{path_id(local)}/{local.name}"


def sync_data(host: str, command: list[str]) -> list[str]:
    """Send each local path given to --data or --weights to REMOTE/data/ and point the command at the copy."""
    out, root = list(command), remote_root()
    for i, eq, local in local_paths(command):
        there = remote_data(local)
        slash = "/" if local.is_dir() else ""
        ssh(host, f"mkdir -p {shlex.quote(root + '/' + str(Path(there).parent))}")
        # --delete: the data copy mirrors the local data exactly (an image removed here must not train there)
        rsync(f"{local}{slash}", f"{host}:{root}/{there}{slash}", "--delete", label=f"--data {local.name}")
        out[i] = (out[i].split("=", 1)[0] + "=" if eq else "") + f"../../{there}"  # it runs in REMOTE/work/NAME
    return out


def project_excludes(workdir: Path, command: list[str]) -> tuple[list[str], list[str]]:
    """rsync --exclude patterns for the project upload, and what was left out for people: virtual environments
    found by their marker files, and the command's data paths inside the project (uploaded once, as data)."""
    patterns, skipped, data = [f"--exclude={p}" for p in NEVER_SYNC], [], set()
    for _, _, local in local_paths(command):
        if local != workdir and workdir in local.parents:
            patterns.append(f"--exclude=/{local.relative_to(workdir).as_posix()}")
            data.add(local)
    for folder, dirs, files in os.walk(workdir):
        here = Path(folder)
        if here in data:
            dirs.clear()
            continue
        if "pyvenv.cfg" in files or "conda-meta" in dirs:
            rel = here.relative_to(workdir).as_posix()
            if rel != ".":
                patterns.append(f"--exclude=/{rel}/")
                skipped.append(f"{rel}/ (a Python environment)")
            dirs.clear()
            continue
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
    return patterns, skipped


def upload(host: str, workdir: Path, command: list[str]) -> list[str]:
    """The project to REMOTE/work and the command's data to REMOTE/data, with sizes and progress; returns the
    command pointed at the uploaded data. Nothing on the host is deleted, nor replaced by an older file."""
    root = remote_root()
    note(f"uploading {workdir} to {host}")
    excludes, skipped = project_excludes(workdir, command)
    note(f"  left out: what .gitignore and .tenfoldignore name, caches, virtual environments"
         f"{': ' + ', '.join(skipped) if skipped else ''}", prefix="")
    rsync(f"{workdir}/", f"{host}:{root}/{remote_work(workdir)}/", "--update", "--filter=:- .gitignore",
          "--filter=:- .tenfoldignore", *excludes, label="the project")
    return sync_data(host, command)


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
    return {**settings, **json.loads(os.environ.get(envvars.AGENT_OVERRIDES) or "{}")}


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


def train_args(command: list[str], at: int) -> argparse.Namespace | None:
    """A `tenfold train` command's flags, read by tenfold train's own parser (abbreviations, --flag=value and
    all); None when it cannot read them: the job's own tenfold train then says why, in one line."""
    from tenfold.argtypes import add_train_arguments
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    add_train_arguments(parser)
    try:
        return parser.parse_known_args(command[at + 1:])[0]
    except (argparse.ArgumentError, SystemExit):
        return None


def job_config(args: argparse.Namespace | None) -> TrainConfig:
    """The settings a `tenfold train` command names its run by (tenfold.presets.resolve_config, as train does)."""
    flags = {k: getattr(args, k, None) for k in TrainConfig.__dataclass_fields__}
    try:
        return resolve_config(flags["preset"], flags)
    except ConfigError:  # an unknown preset or a bad value: the job's own tenfold train says so, in one line
        return TrainConfig().updated(model=flags["model"])


def job_spec(command: list[str], stamp: str) -> dict:
    """The job: its command, and for `tenfold train` the run directory and the command that resumes it."""
    at = is_tenfold_train(command)
    if at is None:
        return {"command": command, "resume": None, "run_dir": None}
    args = train_args(command, at)
    if args is not None and args.resume:
        return {"command": command, "resume": command, "run_dir": args.resume}
    run_dir = args.out if args is not None else None
    if run_dir is None:  # name it now, as tenfold train would: the resume command must know where it is
        run_dir = f"runs/{job_config(args).run_name()}-{stamp}"
        command = [*command, "--out", run_dir]
    resume = [*command[:at + 1], "--resume", run_dir, *resume_flags(args)]
    return {"command": command, "resume": resume, "run_dir": run_dir}


def resume_flags(args: argparse.Namespace | None) -> list[str]:
    """What the resume of a job repeats: the same epochs, device, workers and restarts on the same run, and its
    switches (a resumed run keeps its other settings itself)."""
    if args is None:
        return []
    values = [(f, getattr(args, f[2:].replace("-", "_"))) for f in ("--epochs", "--device", "--devices",
                                                                   "--max-restarts")]
    switches = [s for s in ("--quiet", "--report", "--tensorboard") if getattr(args, s[2:])]
    return [x for f, v in values if v is not None for x in (f, str(v))] + switches


def refusal(host: str, answer: str, name: str) -> str:
    """Why the host will not take a new job now, and what to do."""
    if answer == "busy":
        return (f"another `tenfold cloud run` is starting a job on {host} right now: one job at a time; follow "
                f"it with `tenfold cloud logs {name}` once it started")
    if answer == "running":
        return f"a job is still running on {host}: follow it with `tenfold cloud logs {name}`, or wait for it"
    if answer == "interrupted":
        return (f"the last job on {host} was interrupted and has not finished: continue it with `tenfold cloud run "
                f"{name} --resume`, or start this one anyway with --force (the interrupted job's files stay there)")
    return f"{host} answered '{answer}' instead of taking the job: is tenfold's agent there current?"


def start(host: str, command: list[str], workdir: Path, force: bool = False, name: str | None = None) -> dict:
    """Claim the host (one job at a time, atomically, on the host itself), upload the project and data, then
    start the command detached: it outlives this ssh session and the laptop."""
    if not command:
        raise CloudError("nothing to run: give the command after --, e.g. tenfold cloud run -- tenfold train")
    root, name = remote_root(), name or host
    install_agent(host)
    holder = subprocess.Popen(ssh_command(host, f"python3 {root}/agent.py {root} claim{' --force' * force}"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # the claim lasts while this ssh connection does: a laptop that dies mid-upload lets go of it
        answer = holder.stdout.readline().strip()
        if not answer:  # ssh itself failed
            raise CloudError(ssh_failure(host, holder.stderr.read(), holder.wait()))
        if answer != "claimed":
            raise CloudError(refusal(host, answer, name))
        spec = job_spec(upload(host, workdir, command), datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
        spec["workdir"] = remote_work(workdir)
        write_remote(host, f"{root}/job/next.json", json.dumps(spec))
        holder.stdin.write("start\n")
        holder.stdin.flush()
        answer = holder.stdout.readline().strip()
        if answer != "started":
            unacknowledged(host, name, answer)
    finally:
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait()
    return spec


def resume(host: str) -> str:
    """Continue the job an interruption cut short; says what the job is doing now: resumed, running, busy,
    finished, or none (no job ever ran there)."""
    install_agent(host)
    return agent(host, "resume").stdout.strip()


def unacknowledged(host: str, name: str, answer: str) -> None:
    """The host did not say "started". It said "failed": CloudError. The connection dropped first: the job
    started all the same when the agent took its spec in (follow() tells the rest), else CloudError."""
    root = remote_root()
    taken = None if answer else ssh(host, f"test ! -e {root}/job/next.json", check=False).returncode
    if taken == 255:  # ssh's own failure: the host is gone
        raise CloudError(f"lost {host} while starting the job (the instance stopped?); if it started, it resumes "
                         f"from its last finished epoch with `tenfold cloud run {name} --resume`")
    if taken != 0:
        raise CloudError(f"the job did not start on {host}: see {root}/job/log there")


def follow(host: str, stream=None, name: str | None = None) -> int:
    """Print the job's log as it grows, byte for byte (a progress bar's partial lines too), until the job ends;
    returns its exit status. `name`: how the user names the host, for the commands suggested."""
    root, stream, name = remote_root(), stream or sys.stdout.buffer, name or host
    if agent(host, "state").stdout.strip() == "none":
        raise CloudError(f"no job on {host}: start one with `tenfold cloud run {name} -- COMMAND`")
    cmd = ssh_command(host, f"python3 {root}/agent.py {root} follow")
    with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            stream.write(chunk)
            stream.flush()
    state = agent(host, "state", check=False)
    if state.returncode != 0:
        raise CloudError(f"lost {host} while following the job (the instance stopped?); it resumes from its last "
                         f"finished epoch with `tenfold cloud run {name} --resume`")
    if state.stdout.strip() == "interrupted":
        raise CloudError(f"the job on {host} was interrupted (spot notice, --max-hours, or a stop); continue it "
                         f"from its last finished epoch with `tenfold cloud run {name} --resume`")
    return int(ssh(host, f"cat {root}/job/exit").stdout.strip())


def fetch(host: str, workdir: Path) -> list[str]:
    """Copy the job's results (run directories) back into the local working directory; the host notes when
    (its own clock), so `down` knows what was written there since."""
    project = f"{remote_root()}/{remote_work(workdir)}"
    # one look: the host's clock before the transfer (seconds), then which result folders it has
    lines = ssh(host, "date +%s; " + "; ".join(f"test -d {project}/{n} && echo {n}" for n in RESULTS) + "; true"
                ).stdout.split()
    stamp, got = (lines[0] if lines else ""), lines[1:]
    for name in got:
        rsync(f"{host}:{project}/{name}/", f"{workdir / name}/", "--update",  # a newer local file stays
              label=f"{name}/ back")
    mark_synced(host, project, stamp)
    return got


def mark_synced(host: str, project: str, stamp: str) -> None:
    """Note in the project's copy on the host that its results up to `stamp` are here too (agent.unfetched).
    Only a fetch marks: an upload does not bring back what earlier jobs left there."""
    if stamp.isdigit():
        ssh(host, f"test -d {project} && touch -d @{stamp} {project}/.tenfold-fetched", check=False)


def unfetched(host: str) -> list[str]:
    """Result files on the host written since they were last synced or fetched (see agent.unfetched)."""
    root = remote_root()
    r = ssh(host, f"test -f {root}/agent.py && python3 {root}/agent.py {root} unfetched || echo '[]'")
    return json.loads(r.stdout.strip().splitlines()[-1])
