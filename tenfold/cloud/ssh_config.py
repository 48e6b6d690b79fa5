"""The user's ~/.ssh/config entry for each instance, so `ssh tenfold-NAME` works.

tenfold's block goes at the end of the file between marker lines: ssh takes the first value it finds for each
option, so anything the user wrote earlier for the same host (a bastion, another port) wins.
"""
from __future__ import annotations

import os
from pathlib import Path

from tenfold.fileio import atomic_open, tenfold_home


def config_path() -> Path:
    return Path(os.path.expanduser("~")) / ".ssh" / "config"


def markers(host: str) -> tuple[str, str]:
    return f"# >>> {host} (written by tenfold; removed by `tenfold cloud down`)", f"# <<< {host}"


def block(host: str, address: str, key: Path) -> str:
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
        f"    UserKnownHostsFile {tenfold_home() / 'known_hosts'}",
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


def write_host(host: str, address: str, key: Path) -> None:
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = without(path.read_text() if path.exists() else "", host)
    if text and not text.endswith("\n"):
        text += "\n"
    with atomic_open(path, "w", perms=0o600) as f:
        f.write(text + block(host, address, key))


def remove_host(host: str) -> None:
    path = config_path()
    if path.exists():
        text = path.read_text()
        if markers(host)[0] in text:
            with atomic_open(path, "w", perms=0o600) as f:
                f.write(without(text, host))
