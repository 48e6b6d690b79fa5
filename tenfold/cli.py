"""The command line: parse, validate, call the library, and turn every error into one line."""
from __future__ import annotations

import argparse
import json
import os
import sys

from tenfold import __version__
from tenfold.errors import TenfoldError

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, instead of argparse's usage dump
        self.exit(EXIT_USAGE, f"error: {message} (see '{self.prog} --help')\n")


def positive_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (default: the seed's LeNet-5 on CIFAR-10)",
                       description="Train a model. Every epoch is checkpointed into the run directory.")
    # Defaults are None so that a resumed run knows which flags were given; TrainConfig holds the defaults.
    p.add_argument("--data", help="'cifar10' (downloads the official archive; default), an image folder "
                                  "with train/<class>/*, or a .tar/.tar.gz/.zip of one")
    p.add_argument("--model", help="registered model name (see 'tenfold models') or path/to/net.py:factory")
    p.add_argument("--epochs", type=positive_int, help="passes over the training data (default 10)")
    p.add_argument("--batch-size", type=positive_int, help="images per step (default 256)")
    p.add_argument("--lr", type=number, help="learning rate (default 0.002)")
    p.add_argument("--optimizer", choices=["adam", "sgd"], help="adam (default) or sgd with momentum")
    p.add_argument("--momentum", type=number, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=number, help="L2 weight decay (default 0)")
    p.add_argument("--keep-prob", type=number, help="dropout keep probability, in (0, 1] (default 0.5)")
    p.add_argument("--augment", action="store_true", default=None, help="random crop and flip each batch")
    p.add_argument("--val-split", type=number, help="fraction held out for validation (default 0.1)")
    p.add_argument("--image-size", type=positive_int, help="resize images to this square size")
    p.add_argument("--seed", type=positive_int, help="random seed (default 0)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--out", help="run directory (default runs/MODEL-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run after its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no epoch lines or progress bar")


def cmd_train(args) -> int:
    from tenfold.config import TrainConfig
    from tenfold.train.run import train

    flags = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__ if getattr(args, k, None) is not None}
    if args.resume:
        ignored = sorted(set(flags) - {"epochs", "device"})
        if ignored or args.out:
            print(f"warning: --resume keeps the run's settings; ignoring "
                  f"{', '.join('--' + f.replace('_', '-') for f in ignored + (['out'] if args.out else []))}",
                  file=sys.stderr)
        flags = {k: v for k, v in flags.items() if k in ("epochs", "device")}
        train(resume=args.resume, quiet=args.quiet, **flags)
    else:
        train(TrainConfig(), out=args.out, quiet=args.quiet, **flags)
    return 0


def cmd_evaluate(args) -> int:
    from tenfold.train.infer import evaluate_run, format_evaluation

    result = evaluate_run(args.run_dir, args.data, args.device, quiet=args.json)
    print(json.dumps(result, indent=2) if args.json else format_evaluation(result))
    return 0


def cmd_predict(args) -> int:
    from tenfold.errors import DataError
    from tenfold.train.infer import load_image, load_trained, predict_images

    if args.top < 1:
        raise TenfoldError(f"--top must be at least 1, got {args.top}")
    trained = load_trained(args.run_dir, args.device)
    images, names, failed = [], [], 0
    for path in args.images:
        try:
            images.append(load_image(path, trained.shape))
            names.append(path)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
    results = predict_images(trained, images, args.top) if images else []
    if args.json:
        print(json.dumps([{"image": n, "top": [{"class": c, "probability": p} for c, p in r]}
                          for n, r in zip(names, results)], indent=2))
    for name, top in zip(names, results) if not args.json else []:
        print(f"{name}: " + "  ".join(f"{c} {p:.1%}" for c, p in top))
    return EXIT_ERROR if failed else 0


def cmd_bench(args) -> int:
    from tenfold.train.bench import bench, format_bench

    if args.epochs < 1:
        raise TenfoldError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise TenfoldError(f"--batch-size must be at least 1, got {args.batch_size}")
    from tenfold.train.device import pick_device
    for device in args.device or []:
        pick_device(device)  # a missing GPU is reported before any work starts
    if args.data is None and not args.json:
        print("tenfold bench: synthetic CIFAR-10-shaped data (timing only; --data PATH adds accuracy)",
              file=sys.stderr)
    rows = bench(args.data, args.epochs, args.device, args.batch_size, progress=None if not args.json else False)
    print(json.dumps(rows, indent=2) if args.json else format_bench(rows))
    return 0


def cloud_module():
    try:
        from tenfold.cloud import gpus
    except ImportError as e:
        raise TenfoldError(f"tenfold cloud needs boto3 ({e}): pip install 'tenfold[cloud]'") from None
    return gpus


def cmd_cloud(args) -> int:
    g = cloud_module()
    if args.cloud_command in ("up", "status", "stop", "start", "down"):
        return cmd_instances(args)
    if args.cloud_command in ("run", "logs"):
        return cmd_jobs(args)
    if args.cloud_command == "ssh":
        from tenfold.cloud.remote import ssh_command
        command = ssh_command(args.host or f"tenfold-{args.name}", batch=False)
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

    host = args.host or f"tenfold-{args.name}"
    if args.cloud_command == "logs":
        status = jobs.follow(host)
    else:
        command = args.remote
        if (args.stop or args.down) and args.host:
            raise TenfoldError("--stop and --down are for tenfold's cloud instances, not for --host")
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


def add_cloud(sub) -> None:
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


def cmd_models(args) -> int:
    from tenfold.models import list_models
    print("\n".join(list_models()))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="tenfold", description="Train image classifiers fast, on CPU or GPU, with one command.")
    parser.add_argument("--version", action="version", version=f"tenfold {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train(sub)
    p = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and confusion matrix of a run")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="test data: 'cifar10', a folder with test/<class>/*, or class folders "
                                  "(default: the run's own data)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p = sub.add_parser("predict", help="top-3 classes with probabilities for image files")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p = sub.add_parser("bench", help="time the seed's LeNet-5 epoch on each device here, beside the seed's numbers")
    p.add_argument("--data", help="train on this data and report accuracy too (default: synthetic, timing only)")
    p.add_argument("--epochs", type=positive_int, default=3, help="epochs per device; the first is not timed (default 3)")
    p.add_argument("--device", action="append", help="a device to time (repeatable; default: every device here)")
    p.add_argument("--batch-size", type=positive_int, help="images per step (default: tenfold's)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    add_cloud(sub)
    sub.add_parser("models", help="list the registered models")
    return parser


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "bench": cmd_bench,
            "cloud": cmd_cloud, "models": cmd_models}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    remote = []
    if argv[:2] == ["cloud", "run"] and "--" in argv:  # everything after -- is the remote command, untouched
        cut = argv.index("--")
        argv, remote = argv[:cut], argv[cut + 1:]
    args = make_parser().parse_args(argv)
    if argv[:2] == ["cloud", "run"]:
        if args.remote:
            make_parser().error(f"put the command to run after --: tenfold cloud run [NAME] -- {' '.join(args.remote)}")
        args.remote = remote
    try:
        return COMMANDS[args.command](args)
    except TenfoldError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        hint = " (finished epochs are saved; continue with --resume RUN_DIR)" if args.command == "train" else ""
        print(f"\ninterrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug or an environment fault: still one line, traceback on request
        if os.environ.get("TENFOLD_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: unexpected {e.__class__.__name__}: {first} (set TENFOLD_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_ERROR
