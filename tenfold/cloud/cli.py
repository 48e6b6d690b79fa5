"""`tenfold cloud ...`: the command-line side of tenfold.cloud (boto3 is imported only when a command runs)."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from tenfold.argtypes import Parser, duration, number, positive_int, positive_number
from tenfold.errors import TenfoldError


def hours_or_off(text: str) -> float:
    """--max-hours: hours above 0, or off (0.0: no limit)."""
    return 0.0 if text.strip().lower() in ("off", "none", "never") else positive_number(text)


def duration_or_off(text: str) -> float:
    """--idle-stop: seconds, or off (0.0)."""
    return duration(text) or 0.0


def dollars(text: str) -> float:
    """--max-cost: US dollars above 0, as 5, 2.50 or $5."""
    value = positive_number(text.strip().removeprefix("$"))
    if not math.isfinite(value) or value > 1e6:
        raise argparse.ArgumentTypeError(f"expected dollars from 0 to 1,000,000, got '{text}'")
    return value


def dollars_or_off(text: str) -> float:
    """`up --max-cost`: dollars, or off (0.0: no cap)."""
    return 0.0 if text.strip().lower() in ("off", "none") else dollars(text)


def instance_name(text: str) -> str:
    """NAME of a tenfold instance: it becomes tenfold-NAME in AWS names, file names and ~/.ssh/config."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", text):
        raise argparse.ArgumentTypeError(f"'{text}': an instance NAME is 1-40 letters, digits, - and _ "
                                         "(starting with a letter or digit)")
    return text


def seconds(text: str) -> int:
    value = positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of seconds of at least 1, got '{text}' (or --no-wait)")
    return value


def port(text: str) -> int:
    value = positive_int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got '{text}'")
    return value


def cloud_module():
    try:
        from tenfold.cloud import gpus
    except ImportError as e:
        raise TenfoldError(f"tenfold cloud needs boto3 ({e}): pip install 'tenfold[cloud]'")
    return gpus


def run_command(args) -> int:
    if args.cloud_command in ("run", "logs", "fetch", "ssh", "notebook"):  # any ssh host: AWS only when needed
        return cmd_jobs(args)
    g = cloud_module()
    if args.cloud_command in ("up", "status", "stop", "start", "down"):
        return cmd_instances(args)
    if args.cloud_command == "cost":
        from tenfold.cloud import cost
        result = cost.report(args.region, args.profile)
        print(json.dumps(result, indent=2, default=str) if args.json else cost.format_report(result))
        return 0
    if args.cloud_command == "gpus":
        result = g.gpus(args.region, args.profile, args.history, args.regions)
        print(json.dumps(result, indent=2, default=str) if args.json else g.format_gpus(result))
    elif args.request is not None:
        req = g.request_increase(args.request, args.family, args.spot, args.region, args.profile)
        print(json.dumps(req, indent=2, default=str) if args.json else
              f"requested {req.get('DesiredValue', args.request):g} vCPUs for {req.get('QuotaName', req.get('QuotaCode'))}"
              f" ({req.get('QuotaCode')}): {req.get('Status', 'PENDING')}, request id {req.get('Id', '?')}")
    else:
        result = g.quota(args.region, args.profile)
        print(json.dumps(result, indent=2) if args.json else g.format_quota(result))
    return 0


def host_for(args) -> tuple[str, bool]:
    """The ssh host: --host, an ssh host named NAME, or tenfold's instance NAME (started first for --resume;
    for anything else, checked to be running, so a stopped one is named as such rather than timing out); and
    whether tenfold started the instance for this."""
    from tenfold.cloud.remote import configured, target
    from tenfold.cloud.ssh_config import host_entry, secure_key

    name = args.name or "default"
    if getattr(args, "resume", False) and not args.host and configured(f"tenfold-{name}"):
        cloud_module()
        from tenfold.cloud import instances
        return instances.reach(name, args.region, args.profile)
    host = target(args.name, args.host)
    entry = host_entry(host) if host == f"tenfold-{name}" else {}
    if entry:  # an instance tenfold launched: its key kept private, its state checked
        secure_key(Path(entry.get("identityfile", "")))
        try:
            cloud_module()
            from tenfold.cloud import instances
        except TenfoldError:
            return host, False  # no boto3 here: ssh will tell
        instances.check_reachable(name, args.region, args.profile)
    return host, False


def cmd_jobs(args) -> int:
    from tenfold.cloud import jobs
    from tenfold.cloud.remote import ssh_command

    if args.cloud_command == "run" and (args.stop or args.down) and args.host:
        raise TenfoldError("--stop and --down are for tenfold's cloud instances, not for --host")
    if args.cloud_command == "run" and args.max_cost is not None and args.host:
        raise TenfoldError("--max-cost is for tenfold's cloud instances (their price is AWS's), not for --host")
    if args.cloud_command == "run" and args.resume and (args.remote or args.force):
        raise TenfoldError("--resume continues the job already on the host: give no command after -- and no --force")
    if args.cloud_command == "run" and args.max_cost is not None:
        cap_run(args)  # first: a stopped instance started for --resume then counts against the new cap
    host, started = host_for(args)
    how = f"--host {args.host}" if args.host else (args.name or "default")  # NAME as the user gives it
    if args.cloud_command == "fetch":
        got = jobs.fetch(host, Path.cwd())
        print(f"tenfold: fetched {', '.join(got) or 'nothing (no results on the host)'} from {host} into "
              f"{Path.cwd()}", file=sys.stderr)
        return 0
    if args.cloud_command == "ssh":
        command = ssh_command(host, batch=False)
        os.execvp(command[0], command)  # the user's session from here on
    if args.cloud_command == "notebook":
        from tenfold.cloud import notebook
        if args.stop:
            print(f"tenfold: notebook on {host} {'stopped' if notebook.stop(host) else 'was not running'}")
            return 0
        return notebook.notebook(host, args.port, how)
    if args.cloud_command == "logs":
        jobs.install_agent(host)
        return follow(host, how, fetch=False)
    if args.resume:
        state = jobs.resume(host)
        if state in ("finished", "none"):
            nothing_to_resume(args, host, how, state, started)
        print(f"tenfold: the job on {host}: {state}", file=sys.stderr)
    else:
        jobs.start(host, args.remote, Path.cwd(), force=args.force, name=how)
        print(f"tenfold: started on {host}: {' '.join(args.remote)} (Ctrl-C detaches; the job runs on)",
              file=sys.stderr)
    status = follow(host, how, fetch=True)
    if args.stop or args.down:
        cloud_module()
        from tenfold.cloud import instances
        name = args.name or "default"
        (instances.down if args.down else instances.stop)(name, args.region, args.profile)
        print(f"tenfold: tenfold-{name} {'terminated' if args.down else 'stopped'}", file=sys.stderr)
    return status


def cap_run(args) -> None:
    """`run --max-cost USD`: the instance may cost USD more from now; its agent stops the job and it there."""
    from tenfold.cloud.remote import configured
    name = args.name or "default"
    if not configured(f"tenfold-{name}"):
        raise TenfoldError(f"--max-cost is for tenfold's cloud instances (their price is AWS's); '{name}' is not "
                           "one (see `tenfold cloud status`)")
    cloud_module()
    from tenfold.cloud import instances
    spent, cap = instances.cap_spending(name, args.max_cost, args.region, args.profile)
    print(f"tenfold: --max-cost ${args.max_cost:.2f}: tenfold-{name} has cost ${spent:.2f} so far and stops itself "
          f"at ${cap:.2f} (finished epochs kept: `tenfold cloud run {name} --resume` continues)", file=sys.stderr)


def follow(host: str, how: str, fetch: bool) -> int:
    """Stream the job's log to its end (Ctrl-C detaches, saying how to come back), then fetch runs/ if asked."""
    from tenfold.cloud import jobs
    try:
        status = jobs.follow(host, name=how)
    except KeyboardInterrupt:
        print(f"\ntenfold: detached; the job runs on on {host}: `tenfold cloud logs {how}` follows it again, "
              f"`tenfold cloud fetch {how}` copies runs/ here", file=sys.stderr)
        raise
    if fetch:
        fetched = jobs.fetch(host, Path.cwd())
        print(f"tenfold: job exited with {status}; fetched {', '.join(fetched) or 'nothing'}", file=sys.stderr)
        from tenfold.cloud.measured import import_measurements
        if import_measurements(Path.cwd() / "runs" / "bench"):  # a `tenfold bench` there: plans now say measured
            print("tenfold: its `tenfold bench` throughput is kept for `tenfold cloud plan`", file=sys.stderr)
    return status


def nothing_to_resume(args, host: str, how: str, state: str, started: bool) -> None:
    """`run --resume` with no interrupted job: an error; an instance started only to find that out is stopped."""
    if started:
        cloud_module()
        from tenfold.cloud import instances
        instances.stop(args.name or "default", args.region, args.profile)
    again = " (it was started to look, and is stopped again)" if started else ""
    if state == "none":
        raise TenfoldError(f"no job to resume on {host}{again}: start one with `tenfold cloud run {how} -- COMMAND`")
    raise TenfoldError(f"nothing to resume on {host}: its last job finished{again}; its log: "
                       f"`tenfold cloud logs {how}`")


def cmd_instances(args) -> int:
    from tenfold.cloud import instances as inst
    from tenfold.cloud import present

    if args.cloud_command == "up":
        market = False if args.on_demand else (True if args.spot else None)
        result = inst.up(args.name, args.type, market, args.disk, args.region, args.profile, args.cidr,
                         args.max_price, args.ami, wait=0 if args.no_wait else args.wait,
                         guardrails={"max_hours": args.max_hours, "idle_stop": args.idle_stop,
                                     "max_cost": args.max_cost},
                         change_guardrails=args.change_guardrails)
        print(json.dumps(result, indent=2) if args.json else present.format_up(result))
    elif args.cloud_command == "status":
        rows = inst.status(args.region, args.profile)
        print(json.dumps(rows, indent=2) if args.json else present.format_status(rows))
    elif args.cloud_command == "stop":
        row = inst.stop(args.name, args.region, args.profile)
        print(json.dumps(row, indent=2) if args.json else f"tenfold-{args.name}: {row['state']} (storage still "
              f"bills until `tenfold cloud down {args.name}`)")
    elif args.cloud_command == "start":
        row = present.summary(inst.start(args.name, args.region, args.profile, wait=0 if args.no_wait else args.wait))
        print(json.dumps(row, indent=2) if args.json else f"tenfold-{args.name}: {row['state']} at {row['ip']}")
    else:
        gone = inst.down(args.name, args.region, args.profile, force=args.force)
        print(json.dumps(gone, indent=2) if args.json else present.format_down(args.name, gone))
    return 0


def add_up(csub):
    p = csub.add_parser("up", help="launch a GPU instance (or find the one already running), ready for ssh")
    p.add_argument("--type", help="instance type (default g4dn.xlarge; see `tenfold cloud gpus`)")
    market = p.add_mutually_exclusive_group()
    market.add_argument("--spot", action="store_true", help="a spot instance (the default): about 70%% cheaper, "
                                                            "stopped on interruption, resumable")
    market.add_argument("--on-demand", action="store_true", help="an on-demand instance: never interrupted")
    p.add_argument("--disk", type=positive_int, help="root volume in GB, gp3 (default 100)")
    p.add_argument("--cidr", help="who may ssh in (default: this machine's public address /32)")
    p.add_argument("--max-price", type=number, help="spot: the most to pay per hour (default none, as AWS advises)")
    p.add_argument("--ami", help="machine image (default: the current Deep Learning AMI, from SSM)")
    p.add_argument("--max-hours", type=hours_or_off, metavar="HOURS",
                   help="the instance stops itself after this many hours since it started, e.g. 8 or off "
                        "(default: no limit)")
    p.add_argument("--idle-stop", type=duration_or_off, metavar="DURATION",
                   help="the instance stops itself after this long with no job running, no ssh session or tunnel, "
                        "no notebook in use and no GPU at work, e.g. 30m, 2h, off or 0 (default 1h)")
    p.add_argument("--max-cost", type=dollars_or_off, metavar="USD",
                   help="the instance stops itself once it has cost this many dollars since its launch, at its "
                        "launch price (compute, disk, IPv4), e.g. 5 or off (default: no cap)")
    p.add_argument("--change-guardrails", action="store_true",
                   help="let --max-hours/--idle-stop/--max-cost change those of an instance that exists (else refused)")
    return p


def add_instance_commands(csub) -> list:
    p = add_up(csub)
    st = csub.add_parser("start", help="start it again (the agent resumes an interrupted job)")
    for parser in (p, st):
        parser.add_argument("--wait", type=seconds, default=600, metavar="SECONDS",
                            help="how long to wait for ssh to answer (default 600)")
        parser.add_argument("--no-wait", action="store_true",
                            help="return once the instance runs, without waiting for ssh")
    parsers = [p, st]
    r = csub.add_parser("run", help="sync this folder and the data, run a command detached on the instance, "
                                    "stream its log, fetch runs/ back")
    after = r.add_mutually_exclusive_group()
    after.add_argument("--stop", action="store_true", help="stop the instance when the job ends")
    after.add_argument("--down", action="store_true", help="terminate the instance when the job ends")
    r.add_argument("--resume", action="store_true", help="continue the job an interruption cut short (starting "
                                                         "the instance first if it is stopped)")
    r.add_argument("--force", action="store_true", help="start a new job even though the last one was interrupted "
                                                        "and not resumed (its files stay on the host)")
    r.add_argument("--max-cost", type=dollars, metavar="USD",
                   help="this job may cost at most this many dollars more: at the cap the agent stops it (finished "
                        "epochs kept, resumable) and stops the instance (tenfold's instances only)")
    r.add_argument("name", nargs="?", metavar="NAME", help="the instance's name, or any ssh host (default: default)")
    r.add_argument("remote", nargs="*", metavar="-- COMMAND", help="what to run there, after --")
    lg = csub.add_parser("logs", help="follow the running job's log until it ends")
    fe = csub.add_parser("fetch", help="copy the results (runs/) from the host into this folder")
    sh = csub.add_parser("ssh", help="an interactive shell on the instance")
    nb = csub.add_parser("notebook", help="Jupyter on the instance (127.0.0.1 and a token), through an ssh tunnel")
    nb.add_argument("--port", type=port, help="the local port (default 8888, else a free one)")
    nb.add_argument("--stop", action="store_true", help="stop the notebook server on the instance")
    for parser in (r, lg, fe, sh, nb):
        if parser is not r:
            parser.add_argument("name", nargs="?", metavar="NAME",
                                help="the instance's name, or any ssh host (default: default)")
        parser.add_argument("--host", help="any ssh host (user@address or an ~/.ssh/config name) instead")
    parsers.extend([r, lg, sh, nb, csub.add_parser("cost", help="what tenfold's instances have cost so far: "
                                                                "compute, storage, public IPv4")])
    for verb, text in [("status", "tenfold's instances: state, uptime, $/h"),
                       ("stop", "stop the instance (storage still bills)"),
                       ("down", "terminate it and delete everything tenfold made for it")]:
        parsers.append(csub.add_parser(verb, help=text))
    parsers.extend([fe])
    for parser in parsers:
        if parser.prog.split()[-1] == "down":
            parser.add_argument("--force", action="store_true",
                                help="terminate even if the instance holds results not fetched yet")
        if parser.prog.split()[-1] in ("up", "start", "stop", "down"):
            parser.add_argument("name", nargs="?", default="default", metavar="NAME", type=instance_name,
                                help="the instance's name: letters, digits, - and _ (default: default)")
    return parsers


def add_plan(csub) -> None:
    """`cloud plan` takes a training job as `tenfold train` does (every setting's flag, and --devices)."""
    from tenfold.argtypes import add_settings
    from tenfold.config import TrainConfig
    p = csub.add_parser("plan", help="what a training job will take and cost on each GPU type, before launching",
                        description="Estimate a `tenfold train` job on every GPU type of the catalogue: epoch and "
                                    "total time (start-up included), today's price, the cost, and whether the "
                                    "account's quota allows it now; cheapest first.")
    add_settings(p, TrainConfig)
    p.add_argument("--devices", help="train on N GPUs (or auto: every GPU of the instance); default one")
    market = p.add_mutually_exclusive_group()
    market.add_argument("--spot", action="store_true", help="spot prices, the latest in each zone (the default)")
    market.add_argument("--on-demand", action="store_true", help="on-demand prices (the catalogue's)")
    for parser in (p,):
        parser.add_argument("--region", help="AWS region (default: the profile's, else us-east-1)")
        parser.add_argument("--profile", help="AWS profile (default: boto3's standard chain)")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")


def add_parser(sub) -> None:
    cloud = sub.add_parser("cloud", help="GPU instances on AWS: prices, quotas, launch, stop, terminate")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, parser_class=Parser, metavar="COMMAND")
    p = csub.add_parser("gpus", help="GPU types with on-demand and live spot prices, and what the quotas allow")
    p.add_argument("--history", metavar="DAYS", help="add each type's spot min/median/max over this period, e.g. 30d")
    p.add_argument("--regions", action="store_true", help="list the regions that offer each type")
    add_plan(csub)
    q = csub.add_parser("quota", help="the account's GPU vCPU quotas, and increase requests")
    q.add_argument("--request", type=positive_int, metavar="VCPUS", help="ask AWS to raise the quota to this many vCPUs")
    q.add_argument("--family", default="g", choices=["g", "p"], help="g: G and VT types (default); p: P types")
    q.add_argument("--spot", action="store_true", help="the spot quota instead of the on-demand one")
    for parser in (p, q, *add_instance_commands(csub)):
        parser.add_argument("--region", help="AWS region (default: the profile's, else us-east-1)")
        parser.add_argument("--profile", help="AWS profile (default: boto3's standard chain)")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")
