"""The cloud test bed from a shell: `make testbed` (or `python tests/cloud_testbed.py DIR`).

It starts what the tests use: AWS as a moto server on 127.0.0.1 (with quotas, a spot price, a Deep Learning AMI,
spot requests and the instance metadata service filled in), and "the instance" as a real sshd on 127.0.0.1 that
tenfold's ssh host names lead to. It writes DIR/env.sh; source it in another shell and use tenfold as on AWS:

    . DIR/env.sh
    tenfold cloud gpus
    tenfold cloud up gpu --spot
    tenfold cloud run gpu -- tenfold train --data ../shared/datasets/cifar10-train-jpeg.tar.gz --epochs 3
    curl -X POST $TENFOLD_TESTBED/interrupt/i-...      # a spot interruption: notice, then AWS stops it
    tenfold cloud run gpu --resume
    tenfold cloud down gpu && tenfold cloud cost

Nothing talks to AWS or leaves the machine: boto3 is pointed at the moto server with dummy credentials and no
profile, and the "caller's public address" comes from the test bed too. Ctrl-C ends it all.
"""
from __future__ import annotations

import http.server
import json
import logging
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from aws_testbed import AwsTestBed, ago  # noqa: E402
from ssh_testbed import SshServer, power_off  # noqa: E402
from tenfold.cloud.agent import alive  # noqa: E402  (zombie-aware, as the agent itself checks)

CALLER = "203.0.113.7"
RESTART_AFTER = 20  # seconds until AWS "finds capacity" and starts an interrupted instance again  # the address the test bed reports as this machine's public one (TEST-NET-3)


def spot_interruption(bed: AwsTestBed, instance_id: str, remote: Path, timeout: float = 120) -> None:
    """The 2-minute notice; once the job on the instance has stopped (or the notice time passed), the machine
    goes down and AWS reports the instance stopped, as a capacity interruption does."""
    bed.interrupt(instance_id)
    deadline = time.monotonic() + timeout
    while alive(remote / "job" / "pid") and time.monotonic() < deadline:
        time.sleep(0.05)
    power_off(remote)
    bed.stop_for_capacity(instance_id)


def authorize_new_keys(server: SshServer, keys: Path, stop: threading.Event) -> None:
    """What a new instance's first boot does: install the launch's key pair. Known by content, not by file name:
    a key pair made again under the same name (after `down`, or a failed `up`) is a new key to install."""
    seen: set[bytes] = set()
    while not stop.wait(0.2):
        for key in keys.glob("*.pem") if keys.exists() else []:
            try:
                material = key.read_bytes()
            except OSError:
                continue  # removed meanwhile (`down`)
            if material and material not in seen:
                seen.add(material)
                server.authorize(key)


def control(bed: AwsTestBed, remote: Path) -> http.server.ThreadingHTTPServer:
    """A small endpoint for the faults a shell cannot make: interruptions, refused launches; and checkip."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.reply(200, f"{CALLER}\n" if self.path == "/checkip" else
                       "POST /interrupt/ID, /stop/ID, /fail-launch/CODE, /fail/CODE/ACTION, /clear\n")

        def do_POST(self):
            verb, _, arg = self.path.strip("/").partition("/")
            if verb == "interrupt":
                spot_interruption(bed, arg, remote)
                bed.restart_by_aws(arg, after=RESTART_AFTER)
                self.reply(200, f"{arg}: interrupted and stopped by AWS; capacity returns in {RESTART_AFTER} s\n")
            elif verb == "fail-launch":
                bed.fail_launches(arg)
                self.reply(200, f"the next launch fails with {arg}\n")
            elif verb == "stop":  # the machine shut itself down (idle stop, --max-hours): AWS reports it stopped
                power_off(remote)
                ec2_client(bed).stop_instances(InstanceIds=[arg])
                self.reply(200, f"{arg}: stopped\n")
            elif verb == "fail":  # every call of ACTION (or *) fails with CODE until /clear, e.g. ExpiredToken
                code, _, action = arg.partition("/")
                bed.fail_calls(code, action or "*")
                self.reply(200, f"{action or 'every call'} fails with {code} until POST /clear\n")
            elif verb == "clear":
                bed.clear_faults()
                self.reply(200, "no more faults\n")
            else:
                self.reply(404, "unknown\n")

        def reply(self, code: int, text: str):
            self.send_response(code)
            self.end_headers()
            self.wfile.write(text.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def ec2_client(bed: AwsTestBed):
    import boto3
    return boto3.client("ec2", region_name="us-east-1", endpoint_url=bed.endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def main(root: Path) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server's request log
    root.mkdir(parents=True, exist_ok=True)
    bed, server = AwsTestBed(), SshServer(root / "sshd")
    bed.quotas.update({"L-DB2E81BA": 8.0, "L-3819A6DF": 8.0})
    bed.spot_prices.append(("g4dn.xlarge", "us-east-1a", 0.2104, ago(1)))
    bed.seed_dlami()
    home, remote, tenfold_home = root / "home", root / "remote", root / "tenfold-home"
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "config").write_text(server.user_config())
    ctl = control(bed, remote)
    url = f"http://127.0.0.1:{ctl.server_address[1]}"
    env = {**bed.env(root), "HOME": str(home), "TENFOLD_HOME": str(tenfold_home), "TENFOLD_REMOTE_DIR": str(remote),
           "TENFOLD_CHECKIP_URL": f"{url}/checkip", "TENFOLD_TESTBED": url,
           "TENFOLD_AGENT_OVERRIDES": json.dumps({"stop": ["touch", str(root / "machine-stopped")],
                                                  "boot_hook": False, "imds": bed.imds.url})}
    (root / "env.sh").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()) +
                                 f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH\n")
    stop = threading.Event()
    threading.Thread(target=authorize_new_keys, args=(server, tenfold_home / "keys", stop), daemon=True).start()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` ends it as cleanly as Ctrl-C
    print(f"test bed ready: AWS at {bed.endpoint}, the instance's sshd at 127.0.0.1:{server.port}, faults at {url}\n"
          f"in another shell: . {root / 'env.sh'}   (Ctrl-C here ends it)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        power_off(remote)
        subprocess.run(["pkill", "-f", str(remote)], check=False)  # a notebook server or job left running
        server.close()
        bed.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="tenfold-testbed-")))
