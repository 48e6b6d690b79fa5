"""tenfold's agent on the instance: runs the job, resumes it after an interruption, and enforces the guardrails
there, so they hold with the laptop closed. Standard library only: it is copied to the host and run with the
host's python3 (`python3 agent.py ROOT COMMAND`), whatever else is installed there.

Under ROOT (tenfold's folder on the host, ~/tenfold by default):
  agent.json  the guardrails: max_hours, idle_stop (seconds), max_cost (USD, with usd_per_h: the launch price,
              and spent_before: earlier starts), spot (watch for the interruption notice), stop (the command that
              stops the machine), imds (the metadata service), poll (seconds), auto_resume
  agent.pid, agent.log           the watcher's process and what it did
  spent.json                     with --max-cost: USD spent so far (this boot's base, and the total at the last poll)
  job/spec.json                  the job: command, resume (the command that continues it), run_dir
  job/pid, job/log, job/exit     the job runner's process, the job's output, its exit status once it ended
  job/interrupted                present while a job was cut short (spot notice, max hours) and not yet resumed
  job/lock                       flock(2)ed by whoever starts or resumes a job: one job per host, atomically
  job/history/                   the logs of earlier jobs (the last KEEP_LOGS)
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULTS = {"max_hours": None, "idle_stop": None, "max_cost": None, "usd_per_h": None, "spent_before": 0.0,
            "spot": False, "stop": ["sudo", "-n", "shutdown", "-h", "now"],
            "imds": "http://169.254.169.254", "poll": 5.0, "auto_resume": True, "boot_hook": False,
            "nvidia_smi": "nvidia-smi"}
GPU_BUSY = 10  # % utilisation: a GPU this busy is in use (a job started by hand in screen/tmux), not idle
GRACE = 100  # seconds the job gets to exit after SIGTERM: the spot notice comes 2 minutes before the stop
# The process title of an authenticated ssh connection: "sshd: ubuntu@pts/0" (a shell), "sshd: ubuntu@notty" (a
# command), "sshd: ubuntu [priv]" (its monitor), or a bare "sshd: root" (a root login with only port forwards, as
# `tenfold cloud notebook` opens). Not the listener, nor "[net]"/"[accepted]"/"[preauth]": strangers knocking.
SSH_SESSION = re.compile(r"^sshd(?:-session)?: (?!unknown\b)[\w.-]+(?:@\S+| \[priv\])?$")
KEEP_LOGS = 20  # earlier jobs' logs kept in job/history
RESULTS = ["runs"]  # what jobs write that the laptop fetches back (tenfold's run directories)


def log(root: Path, text: str) -> None:
    with open(root / "agent.log", "a") as f:
        f.write(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ} {text}\n")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def config(root: Path) -> dict:
    path = root / "agent.json"
    return {**DEFAULTS, **(json.loads(path.read_text()) if path.exists() else {})}


def alive(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process still runs, else None."""
    try:
        return alive_pid(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        return None


def alive_pid(pid: int) -> int | None:
    """`pid` if that process runs and is not a zombie (nothing may reap orphans in a container), else None."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return None if f.read().rsplit(")", 1)[1].split()[0] == "Z" else pid
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def job_lock(root: Path, wait: float = 0.0):
    """Hold ROOT/job/lock (flock: released by the kernel when its holder dies, so never stale); yields False
    when another process holds it for longer than `wait` seconds."""
    with open(root / "job" / "lock", "a") as f:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.1)
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def detach(root: Path, *command: str) -> None:
    """Start `python3 agent.py ROOT COMMAND` in a session of its own with no terminal: it outlives this login.
    Forked twice, so that it is never a child of a long-lived process (the watcher), which would leave it a
    zombie when it ends."""
    pid = os.fork()
    if pid == 0:
        try:
            subprocess.Popen([sys.executable, os.path.abspath(__file__), str(root), *command],
                             start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def follow(root: Path) -> None:
    """Print the job's log from the start, and as it grows, until the job ends."""
    (root / "job" / "log").touch()  # a job that has just started may not have opened it yet
    with open(root / "job" / "log", "rb") as f:
        while True:
            running = job_state(root) == "running"
            chunk = f.read()
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
            elif not running:
                return
            else:
                time.sleep(0.2)


# ---- the job ----------------------------------------------------------------------------------------------

def job_state(root: Path) -> str:
    """none | running | finished | interrupted (started, not running, no exit status: cut short)."""
    job = root / "job"
    if not (job / "spec.json").exists():
        return "none"
    if alive(job / "pid"):
        return "running"
    return "finished" if (job / "exit").exists() else "interrupted"


def job_dir(root: Path, spec: dict) -> Path:
    """Where the job runs: its project's copy, ROOT/work/PROJECT (ROOT/work for jobs from older tenfolds)."""
    return root / spec.get("workdir", "work")


def job_command(root: Path, spec: dict) -> list[str]:
    """The command to run: the resume command once the run directory holds a checkpoint, else the original."""
    run_dir = spec.get("run_dir")
    if spec.get("resume") and run_dir and (job_dir(root, spec) / run_dir / "checkpoint.pt").exists():
        return spec["resume"]
    return spec["command"]


def run_job(root: Path) -> int:
    """The job runner: run the command in ROOT/work, its output appended to job/log, and record how it ended."""
    job = root / "job"
    spec = json.loads((job / "spec.json").read_text())
    write_atomic(job / "pid", f"{os.getpid()}\n")
    resuming = (job / "interrupted").exists()
    (job / "exit").unlink(missing_ok=True)
    (job / "interrupted").unlink(missing_ok=True)
    argv = job_command(root, spec)
    with open(job / "log", "a") as out:
        if resuming:
            out.write(f"tenfold: resuming after an interruption: {' '.join(argv)}\n")
            out.flush()
        if not runnable(argv[0], job_dir(root, spec)):
            out.write(f"tenfold: cannot run {argv[0]}: no such command on this host\n")
            write_atomic(job / "exit", "127\n")
            return 127
        # Into a file, Python and C programs buffer their output by the 4-8 kB block: the log would show
        # nothing until the end, and lose the tail to a kill. Unbuffered Python, line-buffered stdio instead.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        itype = config(root).get("instance_type")
        if itype:  # `tenfold bench` records what it measures under the type
            env["TENFOLD_INSTANCE_TYPE"] = itype
        wrapper = ["stdbuf", "-oL", "-eL"] if shutil.which("stdbuf") else []
        try:
            child = subprocess.Popen(wrapper + argv, cwd=job_dir(root, spec), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        except OSError as e:
            out.write(f"tenfold: cannot run {argv[0]}: {e.strerror}\n")
            write_atomic(job / "exit", "127\n")
            return 127
        signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))  # let the job save and exit
        code = child.wait()
    if not (job / "interrupted").exists():  # cut short: no exit status, so the next boot resumes it
        write_atomic(job / "exit", f"{code}\n")
    os.sync()  # the checkpoint on disk before anything stops the machine
    return code


def runnable(program: str, cwd: Path) -> bool:
    """Whether `program` (a name on PATH, or a path from the job's folder) can be run."""
    if "/" in program:
        return os.access(cwd / program, os.X_OK)
    return shutil.which(program) is not None


def interrupt_job(root: Path, why: str) -> None:
    """Mark the job interrupted, ask it to stop (SIGTERM), give it GRACE seconds, and flush the disk."""
    pid = alive(root / "job" / "pid")
    if pid is None:
        return
    (root / "job" / "interrupted").write_text(why + "\n")
    log(root, f"{why}: stopping the job (pid {pid}); it resumes from its last finished epoch")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while alive(root / "job" / "pid") and time.monotonic() < deadline:
        time.sleep(0.2)
    os.sync()


def resume(root: Path) -> str:
    """Restart the interrupted job (under the job lock: the watcher at boot and `run --resume` may both ask)."""
    with job_lock(root, wait=30) as held:
        if not held:
            return "busy"
        state = job_state(root)
        if state == "interrupted":
            log(root, "resuming the interrupted job")
            detach(root, "job")
            resume_wait(root)  # until the runner has written its pid: `logs` can follow at once
            return "resumed"
        return state


def claim(root: Path, force: bool) -> int:
    """Hold the job lock for a `tenfold cloud run` that uploads and then starts a new job: answers one word on
    stdout (busy | running | interrupted | claimed); while claimed, reads stdin: "start" moves job/next.json in
    as the job and starts it (answering started | failed); end of input (the laptop gone) lets go of it all."""
    with job_lock(root) as held:
        state = job_state(root) if held else "busy"
        if state == "running" or state == "busy" or (state == "interrupted" and not force):
            print(state, flush=True)
            return 1
        print("claimed", flush=True)
        if sys.stdin.readline().strip() != "start":
            return 1
        job = root / "job"
        archive_log(job)
        for name in ("exit", "interrupted", "pid"):
            (job / name).unlink(missing_ok=True)
        os.replace(job / "next.json", job / "spec.json")
        detach(root, "job")
        print("started" if resume_wait(root) else "failed", flush=True)
        return 0


def archive_log(job: Path) -> None:
    """Keep the last job's log in job/history (the newest KEEP_LOGS) before a new job starts."""
    if not (job / "log").exists():
        return
    (job / "history").mkdir(exist_ok=True)
    stamp = datetime.datetime.fromtimestamp((job / "log").stat().st_mtime).strftime("%Y%m%d-%H%M%S-%f")
    os.replace(job / "log", job / "history" / f"{stamp}.log")
    for old in sorted((job / "history").glob("*.log"))[:-KEEP_LOGS]:
        old.unlink()


def unfetched(root: Path) -> list[str]:
    """Result files (under each project's runs/) written on this host since the laptop last fetched them (the
    project's .tenfold-fetched, touched with the fetch's start), all if it never did: what terminating the
    machine would lose."""
    found, work = [], root / "work"
    projects = [work] + sorted(p for p in work.iterdir() if p.is_dir()) if work.is_dir() else []
    for project in projects:  # ROOT/work/PROJECT/runs (and ROOT/work/runs, from older tenfolds)
        marker = project / ".tenfold-fetched"
        since = marker.stat().st_mtime if marker.exists() else 0.0
        for name in RESULTS:
            for folder, _, files in os.walk(project / name):  # nothing when there is no such folder
                found += [os.path.relpath(os.path.join(folder, f), work) for f in files
                          if os.path.getmtime(os.path.join(folder, f)) > since]
    return sorted(found)


# ---- the watcher ------------------------------------------------------------------------------------------

def spot_notice(base: str) -> dict | None:
    """The spot interruption notice from IMDSv2 (a session token first), or None while there is none."""
    try:
        token_request = urllib.request.Request(f"{base}/latest/api/token", method="PUT",
                                               headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
        with urllib.request.urlopen(token_request, timeout=2) as r:
            token = r.read().decode()
        notice = urllib.request.Request(f"{base}/latest/meta-data/spot/instance-action",
                                        headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(notice, timeout=2) as r:
            return json.loads(r.read().decode())
    except (OSError, ValueError):  # 404 (no notice), no metadata service, or garbage: no notice
        return None


def ssh_logins() -> int:
    """How many authenticated ssh connections are open: shells, commands, and sessions with only port forwards
    (a notebook's tunnel), by sshd's process titles (see SSH_SESSION)."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().split(b"\0", 1)[0].decode(errors="replace").strip()
            except OSError:
                continue
            count += bool(SSH_SESSION.match(title))
    return count


def notebook_busy(root: Path, since: float) -> bool:
    """Whether the notebook server tenfold started here is in use: a browser connected to a kernel, a kernel
    busy (a cell running with the tunnel closed), or any activity after `since` (time.time()), as Jupyter's
    /api/status and /api/kernels report it."""
    path = root / "notebook.json"
    try:
        info = json.loads(path.read_text())
        if not alive_pid(info["pid"]):
            return False
        base, headers = f"http://127.0.0.1:{info['port']}", {"Authorization": f"token {info['token']}"}
        # no_track_activity: these very polls must not count as someone using the notebook
        status = http_json(f"{base}/api/status?no_track_activity=1", headers)
        kernels = http_json(f"{base}/api/kernels?no_track_activity=1", headers)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    last = status.get("last_activity") or ""
    try:
        recent = datetime.datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() > since
    except ValueError:
        recent = False
    return (status.get("connections", 0) > 0 or recent
            or any(k.get("execution_state") == "busy" or k.get("connections", 0) > 0 for k in kernels))


def http_json(url: str, headers: dict):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return json.loads(r.read().decode())


def gpu_busy(nvidia_smi: str) -> bool:
    """Whether any GPU is at least GPU_BUSY % utilised (nvidia-smi); False where there is none to ask."""
    try:
        r = subprocess.run([nvidia_smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    values = [float(x) for x in r.stdout.split() if x.replace(".", "", 1).isdigit()]
    return r.returncode == 0 and any(v >= GPU_BUSY for v in values)


def boot_time() -> float:
    """When this machine booted (time.time() scale), from /proc/stat."""
    with open("/proc/stat") as f:
        return float(next(line.split()[1] for line in f if line.startswith("btime ")))


def spent_base(root: Path, cfg: dict) -> float:
    """USD the instance cost before this boot's running time: the laptop's figure (spent_before, from its cost
    ledger), or what this agent counted before a restart nobody told the laptop of (AWS restarting a spot
    instance), whichever is more."""
    try:
        last = json.loads((root / "spent.json").read_text())
    except (OSError, ValueError):
        last = {}
    same_boot = last.get("boot") == round(boot_time())
    return max(cfg["spent_before"] or 0.0, float(last.get("base" if same_boot else "spent", 0.0)))


def spent_now(root: Path, cfg: dict, base: float, started: float) -> float:
    """USD spent so far at the launch price (--max-cost), kept in spent.json for a later boot and for `status`."""
    spent = base + cfg["usd_per_h"] * max(0.0, time.time() - started) / 3600
    write_atomic(root / "spent.json", json.dumps({"boot": round(boot_time()), "base": base, "spent": spent,
                                                  "cap": cfg["max_cost"], "usd_per_h": cfg["usd_per_h"]}))
    return spent


def stop_machine(root: Path, cfg: dict, why: str) -> None:
    interrupt_job(root, why)
    log(root, f"{why}: stopping the machine ({' '.join(cfg['stop'])})")
    command = cfg["stop"] if os.geteuid() != 0 or cfg["stop"][:2] != ["sudo", "-n"] else cfg["stop"][2:]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        log(root, f"the stop command failed ({result.returncode}): {result.stderr.strip()[:200]}")


def watch(root: Path) -> None:
    """The guardrails' loop: spot notice, max hours since the instance started, idle stop (no job, no ssh
    connection, no notebook in use, no GPU at work)."""
    if alive(root / "agent.pid"):
        return
    write_atomic(root / "agent.pid", f"{os.getpid()}\n")
    cfg = config(root)
    # --max-hours counts from the instance's start (AWS's LaunchTime, reset at every start, as tenfold passed
    # it), or from this boot if later (AWS restarted it alone): never from the agent's own (re)start.
    started = max(boot_time(), cfg.get("running_since") or 0.0)
    capped = bool(cfg["max_cost"] and cfg["usd_per_h"])  # --max-cost, at the price the launch was made at
    base = spent_base(root, cfg) if capped else 0.0
    idle_since = time.monotonic()
    log(root, f"agent started: max_hours={cfg['max_hours'] or 'none'} idle_stop={cfg['idle_stop'] or 'none'} "
              f"max_cost={cfg['max_cost'] or 'none'} "
              f"(seconds) spot={cfg['spot']} running since "
              f"{datetime.datetime.fromtimestamp(started, datetime.timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
    if cfg["auto_resume"] and job_state(root) == "interrupted":
        resume(root)
    noticed = False
    while (root / "agent.json").exists():  # removing the config ends the agent
        now = time.monotonic()
        if cfg["spot"] and not noticed:
            notice = spot_notice(cfg["imds"])
            if notice:
                noticed = True
                interrupt_job(root, f"spot interruption notice ({notice.get('action')} at {notice.get('time')})")
        if cfg["max_hours"] and time.time() - started >= cfg["max_hours"] * 3600:
            return stop_machine(root, cfg, f"--max-hours {cfg['max_hours']:g} reached")
        if capped and (spent := spent_now(root, cfg, base, started)) >= cfg["max_cost"]:
            return stop_machine(root, cfg, f"--max-cost ${cfg['max_cost']:.2f} reached (${spent:.4f} at "
                                           f"${cfg['usd_per_h']:.4f}/h)")
        if (job_state(root) == "running" or ssh_logins() or gpu_busy(cfg["nvidia_smi"])
                or notebook_busy(root, time.time() - (now - idle_since))):
            idle_since = now
        elif cfg["idle_stop"] and now - idle_since >= cfg["idle_stop"]:
            return stop_machine(root, cfg, f"idle for {cfg['idle_stop']:g} s (no job, no ssh session or tunnel, "
                                           "no notebook in use, GPUs idle)")
        time.sleep(cfg["poll"])


def boot_hook(root: Path) -> None:
    """Start the agent at every boot (a persistent spot request restarts a stopped instance on its own)."""
    line = f"@reboot {sys.executable} {os.path.abspath(__file__)} {root} ensure # tenfold-agent"
    try:
        current = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
        kept = [x for x in current.stdout.splitlines() if "# tenfold-agent" not in x] if current.returncode == 0 else []
        subprocess.run(["crontab", "-"], input="\n".join(kept + [line]) + "\n", text=True, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log(root, f"no boot hook (crontab: {e}); the agent starts when tenfold next connects")


def ensure(root: Path, restart: bool = False) -> None:
    """Start the watcher unless it runs (restart: stop the old one first, to take a new config)."""
    pid = alive(root / "agent.pid")
    if pid and restart:
        os.kill(pid, signal.SIGTERM)
        while alive(root / "agent.pid"):
            time.sleep(0.05)
        pid = None
    if config(root)["boot_hook"]:
        boot_hook(root)
    if pid is None:
        detach(root, "watch")
        deadline = time.monotonic() + 10
        while not alive(root / "agent.pid") and time.monotonic() < deadline:
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    root, command = Path(argv[0]).expanduser().resolve(), argv[1]
    (root / "job").mkdir(parents=True, exist_ok=True)
    if command == "job":
        return run_job(root)
    if command == "claim":
        return claim(root, force="--force" in argv[2:])
    if command == "resume":
        print(resume(root))
    elif command == "follow":
        follow(root)
    elif command == "state":
        print(job_state(root))
    elif command == "unfetched":
        print(json.dumps(unfetched(root)))
    elif command in ("ensure", "restart"):
        ensure(root, restart=command == "restart")
    elif command == "watch":
        watch(root)
    elif command == "notebook":  # the notebook server tenfold started here, while it runs
        info = json.loads((root / "notebook.json").read_text()) if (root / "notebook.json").exists() else None
        if info and alive_pid(info["pid"]):
            print(json.dumps(info))
    elif command == "free-port":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            print(s.getsockname()[1])
    elif command == "probe":  # exit 0 once something answers on 127.0.0.1:PORT
        with socket.socket() as s:
            return 0 if s.connect_ex(("127.0.0.1", int(argv[2]))) == 0 else 1
    return 0


def resume_wait(root: Path) -> bool:
    deadline = time.monotonic() + 10
    while not alive(root / "job" / "pid") and not (root / "job" / "exit").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
