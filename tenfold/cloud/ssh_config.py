"""The user's ~/.ssh/config entry for each instance, so `ssh tenfold-NAME` works.

tenfold's block goes at the end of the file between marker lines: ssh takes the first value it finds for each
option, so anything the user wrote earlier for the same host (a bastion, another port) wins.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tenfold.fileio import atomic_open, tenfold_home
from tenfold.log import note


def config_path() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def markers(host: str) -> tuple[str, str]:
    return f"# >>> {host} (written by tenfold; removed by `tenfold cloud down`)", f"# <<< {host}"


def known_hosts() -> Path:
    return tenfold_home() / "known_hosts"


def block(host: str, address: str, key: Path, alias: str) -> str:
    begin, end = markers(host)
    return "\n".join([  # ssh_config allows comments only on lines of their own
        begin,
        f"Host {host}",
        f"    HostName {address}",
        "    # the Deep Learning AMI's login",
        "    User ubuntu",
        f"    IdentityFile {key}",
        "    # offer only this key, not every key the agent holds",
        "    IdentitiesOnly yes",
        "    # trust a new instance's host key once, then insist on it",
        "    StrictHostKeyChecking accept-new",
        "    # instances reuse addresses: keep their host keys apart from the user's own",
        f"    UserKnownHostsFile {known_hosts()}",
        "    # ... and file each key under the instance's ID, not its address: a new instance at a reused address",
        "    # is a new host, while a changed key for the same instance is still refused",
        f"    HostKeyAlias {alias}",
        "    # notice a vanished instance (a spot interruption, say) within two minutes",
        "    ServerAliveInterval 30",
        "    ServerAliveCountMax 4",
        end, ""])


def without(text: str, host: str) -> str:
    begin, end = markers(host)
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.rstrip("\n") == begin:
            skipping = True
        elif skipping and line.rstrip("\n") == end:
            skipping = False
        elif not skipping:
            out.append(line)
    return "".join(out)


def write_host(host: str, address: str, key: Path, alias: str) -> None:
    """`ssh HOST` reaches `address` with `key`; its host key is filed under `alias` (the instance ID)."""
    secure_key(key)
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = without(path.read_text() if path.exists() else "", host)
    if text and not text.endswith("\n"):
        text += "\n"
    with atomic_open(path, "w", perms=0o600) as f:
        f.write(text + block(host, address, key, alias))


def secure_key(key: Path) -> None:
    """ssh refuses a private key that others may read: put tenfold's own key back to 0600, and say so."""
    try:
        mode = key.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o077:
        os.chmod(key, 0o600)
        note(f"{key} was readable by others (mode {mode:o}); set it back to 600, as ssh requires")


def forget_host_key(*names: str) -> None:
    """Remove the host keys filed under these names (an instance's ID, an old address) from tenfold's
    known_hosts: a terminated instance's key must not stand in the way of the next one."""
    if not known_hosts().exists():
        return
    for name in names:
        if name:
            subprocess.run(["ssh-keygen", "-R", name, "-f", str(known_hosts())], capture_output=True)
    known_hosts().with_name("known_hosts.old").unlink(missing_ok=True)


def host_entry(host: str) -> dict[str, str]:
    """tenfold's entry for `host` in ~/.ssh/config as {option (lower case): value}; empty when there is none."""
    path = config_path()
    text = path.read_text() if path.exists() else ""
    begin, end = markers(host)
    if begin not in text:
        return {}
    inside = text.split(begin, 1)[1].split(end, 1)[0]
    return {k.lower(): v.strip() for line in inside.splitlines() if line.strip() and not line.strip().startswith("#")
            for k, _, v in [line.strip().partition(" ")]}


def remove_host(host: str) -> None:
    path = config_path()
    if path.exists():
        text = path.read_text()
        if markers(host)[0] in text:
            with atomic_open(path, "w", perms=0o600) as f:
                f.write(without(text, host))
