"""`tenfold cloud ...`: the command-line side of tenfold.cloud (boto3 is imported only when a command runs)."""
from __future__ import annotations

import json
import os
import sys

from tenfold.argtypes import Parser, number, positive_int
from tenfold.errors import TenfoldError


def cloud_module():
    try:
        from tenfold.cloud import gpus
    except ImportError as e:
        raise TenfoldError(f"tenfold cloud needs boto3 ({e}): pip install 'tenfold[cloud]'") from None
    return gpus


def run_command(args) -> int:
    g = cloud_module()
    if args.cloud_command in ("up", "status", "stop", "start", "down"):
        return cmd_instances(args)
    if args.cloud_command in ("run", "logs"):
        return cmd_jobs(args)
    if args.cloud_command == "ssh":
        from tenfold.cloud.remote import ssh_command, target
        command = ssh_command(target(args.name, args.host), batch=False)
        os.execvp(command[0], command)  # the user's session from here on
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


def cmd_jobs(args) -> int:
    from pathlib import Path

    from tenfold.cloud import jobs

    from tenfold.cloud.remote import target

    if (getattr(args, "stop", False) or getattr(args, "down", False)) and args.host:
        raise TenfoldError("--stop and --down are for tenfold's cloud instances, not for --host")
    host = target(args.name, args.host)
    if args.cloud_command == "logs":
        status = jobs.follow(host)
    else:
        command = args.remote
        jobs.start(host, command, Path.cwd())
        print(f"tenfold: started on {host}: {' '.join(command)} (Ctrl-C detaches; `tenfold cloud logs` reattaches)",
              file=sys.stderr)
        status = jobs.follow(host)
        fetched = jobs.fetch(host, Path.cwd())
        print(f"tenfold: job exited with {status}; fetched {', '.join(fetched) or 'nothing'}", file=sys.stderr)
        if args.stop or args.down:
            from tenfold.cloud import instances
            (instances.down if args.down else instances.stop)(args.name, args.region, args.profile)
            print(f"tenfold: tenfold-{args.name} {'terminated' if args.down else 'stopped'}", file=sys.stderr)
    return status


def cmd_instances(args) -> int:
    from tenfold.cloud import instances as inst

    if args.cloud_command == "up":
        result = inst.up(args.name, args.type, not args.on_demand, args.disk, args.region, args.profile, args.cidr,
                         args.max_price, args.ami, wait=0 if args.no_wait else args.wait)
        print(json.dumps(result, indent=2) if args.json else inst.format_up(result))
    elif args.cloud_command == "status":
        rows = inst.status(args.region, args.profile)
        print(json.dumps(rows, indent=2) if args.json else inst.format_status(rows))
    elif args.cloud_command == "stop":
        row = inst.stop(args.name, args.region, args.profile)
        print(json.dumps(row, indent=2) if args.json else f"tenfold-{args.name}: {row['state']} (storage still "
              f"bills until `tenfold cloud down {args.name}`)")
    elif args.cloud_command == "start":
        row = inst.summary(inst.start(args.name, args.region, args.profile))
        print(json.dumps(row, indent=2) if args.json else f"tenfold-{args.name}: {row['state']} at {row['ip']}")
    else:
        gone = inst.down(args.name, args.region, args.profile)
        print(json.dumps(gone, indent=2) if args.json else inst.format_down(args.name, gone))
    return 0


def add_instance_commands(csub) -> list:
    p = csub.add_parser("up", help="launch a GPU instance (or find the one already running), ready for ssh")
    p.add_argument("--type", default="g4dn.xlarge", help="instance type (default g4dn.xlarge; see `tenfold cloud gpus`)")
    market = p.add_mutually_exclusive_group()
    market.add_argument("--spot", action="store_true", help="a spot instance (the default): about 70%% cheaper, "
                                                            "stopped on interruption, resumable")
    market.add_argument("--on-demand", action="store_true", help="an on-demand instance: never interrupted")
    p.add_argument("--disk", type=positive_int, default=100, help="root volume in GB, gp3 (default 100)")
    p.add_argument("--cidr", help="who may ssh in (default: this machine's public address /32)")
    p.add_argument("--max-price", type=number, help="spot: the most to pay per hour (default none, as AWS advises)")
    p.add_argument("--ami", help="machine image (default: the current Deep Learning AMI, from SSM)")
    p.add_argument("--wait", type=positive_int, default=600, metavar="SECONDS",
                   help="how long to wait for ssh to answer (default 600)")
    p.add_argument("--no-wait", action="store_true", help="return once the instance runs, without waiting for ssh")
    parsers = [p]
    r = csub.add_parser("run", help="sync this folder and the data, run a command detached on the instance, "
                                    "stream its log, fetch runs/ back")
    r.add_argument("--host", help="any ssh host (user@address or an ~/.ssh/config name) instead of an instance")
    after = r.add_mutually_exclusive_group()
    after.add_argument("--stop", action="store_true", help="stop the instance when the job ends")
    after.add_argument("--down", action="store_true", help="terminate the instance when the job ends")
    r.add_argument("name", nargs="?", default="default", metavar="NAME", help="the instance's name (default: default)")
    r.add_argument("remote", nargs="*", metavar="-- COMMAND", help="what to run there, after --")
    lg = csub.add_parser("logs", help="follow the running job's log until it ends")
    lg.add_argument("--host", help="any ssh host instead of an instance")
    sh = csub.add_parser("ssh", help="an interactive shell on the instance")
    sh.add_argument("--host", help="any ssh host instead of an instance")
    parsers.extend([r, lg, sh, csub.add_parser("cost", help="what tenfold's instances have cost so far: compute, "
                                                      "storage, public IPv4")])
    for verb, text in [("status", "tenfold's instances: state, uptime, $/h"),
                       ("stop", "stop the instance (storage still bills)"), ("start", "start it again"),
                       ("down", "terminate it and delete everything tenfold made for it")]:
        parsers.append(csub.add_parser(verb, help=text))
    for parser in parsers:
        if parser.prog.split()[-1] not in ("status", "run", "cost"):
            parser.add_argument("name", nargs="?", default="default", metavar="NAME",
                                help="the instance's name (default: default)")
    return parsers


def add_parser(sub) -> None:
    cloud = sub.add_parser("cloud", help="GPU instances on AWS: prices, quotas, launch, stop, terminate")
    csub = cloud.add_subparsers(dest="cloud_command", required=True, parser_class=Parser)
    p = csub.add_parser("gpus", help="GPU types with on-demand and live spot prices, and what the quotas allow")
    p.add_argument("--history", metavar="DAYS", help="add each type's spot min/median/max over this period, e.g. 30d")
    p.add_argument("--regions", action="store_true", help="list the regions that offer each type")
    q = csub.add_parser("quota", help="the account's GPU vCPU quotas, and increase requests")
    q.add_argument("--request", type=positive_int, metavar="VCPUS", help="ask AWS to raise the quota to this many vCPUs")
    q.add_argument("--family", default="g", choices=["g", "p"], help="g: G and VT types (default); p: P types")
    q.add_argument("--spot", action="store_true", help="the spot quota instead of the on-demand one")
    for parser in (p, q, *add_instance_commands(csub)):
        parser.add_argument("--region", help="AWS region (default: the profile's, else us-east-1)")
        parser.add_argument("--profile", help="AWS profile (default: boto3's standard chain)")
        parser.add_argument("--json", action="store_true", help="print the results as JSON")
