"""Reaching an instance: ssh through the user's ssh config (so their bastions and overrides apply)."""
from __future__ import annotations

import os
import subprocess
import time

from tenfold.errors import CloudError
from tenfold.cloud.ssh_config import config_path


def ssh_command(host: str, *remote: str, batch: bool = True) -> list[str]:
    return ["ssh", "-F", str(config_path()),
            # never stop to ask for a password or passphrase (except in an interactive session)
            *(["-o", "BatchMode=yes"] if batch else []),
            "-o", "ConnectTimeout=10",   # a booting instance may drop the first packets: give up and retry
            host, *remote]


def wait_for_ssh(host: str, timeout: float, interval: float = 3.0) -> None:
    """Until `ssh HOST true` succeeds: a new instance needs a minute or two before its key is installed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            r = subprocess.run(ssh_command(host, "true"), capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise CloudError("no ssh client found: install OpenSSH (e.g. `apt install openssh-client`)") from None
        except subprocess.TimeoutExpired:
            r = None
        if r is not None and r.returncode == 0:
            return
        if time.monotonic() >= deadline:
            why = (r.stderr.strip().splitlines() or ["no answer"])[-1] if r is not None else "no answer"
            raise CloudError(f"{host} is running (and billing) but ssh did not answer within {timeout:.0f} s ({why}); "
                             f"try `ssh {host}`, or stop paying with `tenfold cloud down {host.removeprefix('tenfold-')}`")
        time.sleep(interval)


def configured(alias: str) -> bool:
    """Whether ~/.ssh/config maps `alias` to an address (else ssh would look the name itself up in DNS)."""
    try:
        resolved = subprocess.run(["ssh", "-G", "-F", str(config_path()), alias], capture_output=True, text=True,
                                  timeout=30)
    except FileNotFoundError:
        raise CloudError("no ssh client found: install OpenSSH (e.g. `apt install openssh-client`)") from None
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
    if not name and os.environ.get("TENFOLD_HOST"):
        return os.environ["TENFOLD_HOST"]
    raise CloudError(f"no instance '{name or 'default'}' is set up here: launch it with `tenfold cloud up"
                     f"{' ' + name if name else ''}`, or give any ssh host with --host user@address "
                     "(or set TENFOLD_HOST)")
