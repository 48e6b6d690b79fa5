"""Reaching an instance: ssh through the user's ssh config (so their bastions and overrides apply)."""
from __future__ import annotations

import os
import re
import subprocess

from tenfold import envvars
from tenfold.errors import CloudError
from tenfold.polling import wait_until
from tenfold.cloud.ssh_config import config_path


def ssh_command(host: str, *remote: str, batch: bool = True) -> list[str]:
    return ["ssh", "-F", str(config_path()),
            # never stop to ask for a password or passphrase (except in an interactive session)
            *(["-o", "BatchMode=yes"] if batch else []),
            "-o", "ConnectTimeout=10",   # a booting instance may drop the first packets: give up and retry
            host, *remote]


def lasting(stderr: str) -> str | None:
    """What in ssh's complaint will not go away by waiting, said with the way out; None for what may (no route
    yet, connection refused, the key not yet installed while an instance boots)."""
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or "Host key verification failed" in stderr:
        remove = re.search(r"(ssh-keygen -f \S+ -R \S+)", stderr)  # OpenSSH prints the command that forgets it
        forget = f"`{remove[1]}`" if remove else "`ssh-keygen -R` on its known_hosts entry"
        return (f"its host key is not the one ssh knows for it: if the machine was replaced or its host keys "
                f"regenerated, forget the old key with {forget}; otherwise something may be intercepting the "
                "connection")
    key = re.search(r"Permissions 0?(\d+) for '([^']+)' are too open", stderr)
    if key:
        return f"ssh refuses the private key {key[2]}: others may read it (mode {key[1]}); `chmod 600 {key[2]}`"
    if "Could not resolve hostname" in stderr:
        return stderr.strip().splitlines()[-1]
    return None


def ssh_failure(host: str, stderr: str, code: int) -> str:
    """One line for a failed ssh command."""
    lines = [x for x in stderr.strip().splitlines() if not x.startswith(("@", "Warning: Permanently"))]
    return f"ssh {host} failed: {lasting(stderr) or (lines[-1] if lines else f'exit {code}')}"


def wait_for_ssh(host: str, timeout: float, interval: float = 3.0) -> None:
    """Until `ssh HOST true` succeeds: a new instance needs a minute or two before its key is installed. What
    waiting cannot fix (a changed host key, a readable private key) fails at once."""
    last = ["no answer"]

    def answers() -> bool | None:
        try:
            r = subprocess.run(ssh_command(host, "true"), capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise CloudError("no ssh client found: install OpenSSH (e.g. `apt install openssh-client`)")
        except subprocess.TimeoutExpired:
            return None
        if r.returncode == 0:
            return True
        if lasting(r.stderr):
            raise CloudError(f"{host} is running (and billing) but cannot be reached: {lasting(r.stderr)}")
        last[0] = (r.stderr.strip().splitlines() or ["no answer"])[-1]
        return None
    if not wait_until(answers, timeout, interval):
        raise CloudError(f"{host} is running (and billing) but ssh did not answer within {timeout:.0f} s ({last[0]}); "
                         f"try `ssh {host}`, or stop paying with `tenfold cloud down {host.removeprefix('tenfold-')}`")


def configured(alias: str) -> bool:
    """Whether ~/.ssh/config maps `alias` to an address (else ssh would look the name itself up in DNS)."""
    try:
        resolved = subprocess.run(["ssh", "-G", "-F", str(config_path()), alias], capture_output=True, text=True,
                                  timeout=30)
    except FileNotFoundError:
        raise CloudError("no ssh client found: install OpenSSH (e.g. `apt install openssh-client`)")
    hostname = next((line.split(" ", 1)[1] for line in resolved.stdout.splitlines()
                     if line.startswith("hostname ")), alias)
    return resolved.returncode == 0 and hostname != alias


def target(name: str | None, host: str | None) -> str:
    """The ssh host for a command: --host; else the instance tenfold-NAME that `up` configured; else NAME itself
    when it is an ssh host (user@address, or a Host in ~/.ssh/config); else $TENFOLD_HOST when no NAME is given."""
    if host:
        return host
    if configured(f"tenfold-{name or 'default'}"):
        return f"tenfold-{name or 'default'}"
    if name and ("@" in name or configured(name)):
        return name
    if not name and os.environ.get(envvars.HOST):
        return os.environ[envvars.HOST]
    raise CloudError(f"no instance '{name or 'default'}' is set up here: launch it with `tenfold cloud up"
                     f"{' ' + name if name else ''}`, or give any ssh host with --host user@address "
                     "(or set TENFOLD_HOST)")
