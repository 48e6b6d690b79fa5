"""The command line: parse, validate, call the library, and turn every error into one line."""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import traceback

from tenfold import envvars
from tenfold.version import __version__
from tenfold.argtypes import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, RUN_FLAGS, Parser, add_train_arguments,
                              positive_int)
from tenfold.cloud import cli as cloud_cli
from tenfold.config import RESUME_SETTINGS, TrainConfig
from tenfold.errors import TenfoldError, Terminated
from tenfold.fileio import check_run_dir
from tenfold.log import note


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model (default: the seed's LeNet-5 on CIFAR-10)",
                       description="Train a model. Every epoch is checkpointed into the run directory.")
    add_train_arguments(p)


def worker_argv(args) -> list[str]:
    """The run flags given (RUN_FLAGS), for the workers' command line."""
    argv = []
    for dest, flag in RUN_FLAGS.items():
        value = getattr(args, dest, None)
        if value not in (None, False):
            argv += [flag] + ([] if value is True else [str(value)])
    return argv


def cmd_train(args) -> int:
    for flag in ("resume", "out", "data", "model"):
        if getattr(args, flag, None) == "":
            raise TenfoldError(f"--{flag} needs a value, got an empty one")
    if restarted_worker(args):  # the launcher restarted us after a failure: continue from the checkpoint
        args.resume, args.out = args.out, None
    flags = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__}
    resolved = os.environ.get(WORKER_CONFIG) if "RANK" in os.environ else None
    if resolved:  # a launched worker: the launcher's resolved configuration, exactly, not a re-spelling of flags
        flags = {k: v for k, v in json.loads(resolved).items() if k in RESUME_SETTINGS or not args.resume}
    if (args.devices is not None or args.max_restarts is not None) and "RANK" not in os.environ:
        if launch_workers(args, flags):  # the launcher's side; its workers run this command without these flags
            return 0
    from tenfold.training.run import train
    history = train(out=args.out, resume=args.resume, quiet=args.quiet, tensorboard=args.tensorboard, **flags)
    if args.report:
        from tenfold.report.make import report_run
        report_run(history, args.quiet)
    return 0


WORKER_CONFIG = envvars.WORKER_CONFIG  # the launcher's resolved TrainConfig, as JSON, for its workers


def restarted_worker(args) -> bool:
    """A worker the launcher restarted after a failure, whose run has a checkpoint to continue from. Imports
    torch only in such a worker: the launcher must set its log level before torch loads (launch_workers)."""
    if "RANK" not in os.environ or int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) == 0:
        return False
    from tenfold.training.checkpoint import CHECKPOINT
    return bool(args.out) and os.path.exists(os.path.join(args.out, CHECKPOINT))


def launch_workers(args, flags: dict) -> bool:
    """Start the workers and wait for them; False when one process on its own is the better way (one device)."""
    # before torch loads: no C++ log lines from each worker (a worker that fails makes its peers' Gloo log an
    # error too); the launcher reports each worker's own error in one line
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "FATAL")

    from tenfold.training import launch
    from tenfold.training.checkpoint import load_checkpoint

    from tenfold.presets import resolve_config
    saved = load_checkpoint(args.resume)["config"] if args.resume else None
    return launch.start(args, resolve_config(flags["preset"], flags, saved), worker_argv)


def cmd_presets(args) -> int:
    from tenfold.presets import PRESETS
    rows = [{"name": p.name, "model": p.settings.get("model"), "epochs": p.settings.get("epochs", 10),
             "description": p.description, "expected": p.expected} for p in PRESETS.values()]
    if args.measure:
        from tenfold.training import estimate
        if not all(estimate.is_cached(r["name"]) for r in rows) and not args.json:
            print("tenfold: timing each preset's training step on this machine (once; cached)...", file=sys.stderr)
        for r in rows:
            e = estimate.estimate(r["name"])
            r.update({"estimate_s": round(e.seconds), "estimate": e.describe(), "scale": estimate.scale_label(r["name"])})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        from tenfold.tables import table
        print(table([[r["name"], r["model"], r["epochs"], "\n".join([r["description"], r["expected"]] + (
            [f"{r['estimate']}, {r['scale']}"] if "estimate" in r else []))] for r in rows],
            ["preset", "model", "epochs", "what it is; what it reached"], "llr"))
    return 0


def cmd_evaluate(args) -> int:
    check_run_dir(args.run_dir)  # a wrong path answered before torch loads
    from tenfold.training.judge import evaluate_run, format_evaluation

    result = evaluate_run(args.run_dir, args.data, args.device, quiet=args.json, tta=args.tta)
    print(json.dumps(result, indent=2) if args.json else format_evaluation(result))
    return 0


def cmd_predict(args) -> int:
    check_run_dir(args.run_dir)
    from tenfold.errors import DataError
    from tenfold.training.infer import image_files, load_image, load_trained, predict_images

    if args.top < 1:
        raise TenfoldError(f"--top must be at least 1, got {args.top}")
    trained = load_trained(args.run_dir, args.device)
    images, names, failed = [], [], 0
    for path, explicit in image_files(args.images):
        try:
            images.append(load_image(path, trained.shape, trained.fit))
            names.append(path)
        except DataError as e:  # a file named on the command line is an error; one found in a folder, a skip
            print(f"{'error' if explicit else 'warning: skipped'}: {e}", file=sys.stderr)
            failed += explicit
    if not images and not failed:
        raise DataError(f"no images to predict in {' '.join(args.images)}")
    results = predict_images(trained, images, args.top, args.tta) if images else []
    from tenfold.data.folder import printable
    if args.json:
        print(json.dumps([{"image": printable(n), "top": [{"class": c, "probability": p} for c, p in r]}
                          for n, r in zip(names, results)], indent=2))
    for name, top in zip(names, results) if not args.json else []:
        print(f"{printable(name)}: " + "  ".join(f"{c} {p:.1%}" for c, p in top))
    return EXIT_ERROR if failed else 0


def cmd_report(args) -> int:
    check_run_dir(args.run_dir)
    from tenfold.report.make import make_report
    path = make_report(args.run_dir, args.data, args.device, quiet=args.quiet)
    print(path)
    return 0


def cmd_export(args) -> int:
    from tenfold.export.target import check_export
    check_export(args.run_dir, args.out)  # a wrong path answered before torch loads (seconds)
    from tenfold.export.to_onnx import export_onnx
    done = export_onnx(args.run_dir, args.out)
    h, w, c = done.input_shape
    size = done.path.stat().st_size
    print(f"wrote {done.path} ({size / 2**20:.1f} MiB, ONNX opset {done.opset}): uint8 images (N, {h}, {w}, {c}) "
          f"-> probabilities (N, {len(done.classes)})")
    print(f"verified with onnxruntime {done.onnxruntime} on {done.checked_images} images: largest difference from "
          f"tenfold's own probabilities {done.max_difference:.1e} (both in fp32)")
    if done.tenfold_precision != "fp32":
        note(f"this run trained in 16 bits, so `tenfold predict` and `tenfold serve` compute in "
             f"{done.tenfold_precision} on this machine: their probabilities differ from the file's in about the "
             "third digit", prefix="note: ")
    return 0


def cmd_serve(args) -> int:
    check_run_dir(args.run_dir)
    from tenfold.serve.server import serve
    serve(args.run_dir, args.host, args.port, args.device, args.tta)
    return 0


def cmd_bench(args) -> int:
    from tenfold.training.bench import bench, format_bench

    if args.epochs < 1:
        raise TenfoldError(f"--epochs must be at least 1, got {args.epochs}")
    if args.batch_size is not None and args.batch_size < 1:
        raise TenfoldError(f"--batch-size must be at least 1, got {args.batch_size}")
    from tenfold.training.device import pick_device
    for device in args.device or []:
        pick_device(device)  # a missing GPU is reported before any work starts
    if args.data is None and not args.json:
        print("tenfold bench: synthetic CIFAR-10-shaped data (timing only; --data PATH adds accuracy)",
              file=sys.stderr)
    rows = bench(args.data, args.epochs, args.device, args.batch_size, progress=None if not args.json else False)
    print(json.dumps(rows, indent=2) if args.json else format_bench(rows))
    if os.environ.get(envvars.INSTANCE_TYPE) and args.data is None:  # on a tenfold instance: for `cloud plan`
        from tenfold.training.bench import record_measured
        kept = record_measured(rows, os.environ[envvars.INSTANCE_TYPE], batch_size=args.batch_size)
        if kept:
            print(f"tenfold: recorded for `tenfold cloud plan` in {kept}", file=sys.stderr)
    return 0


def cmd_cloud(args) -> int:
    """`tenfold cloud ...`; `plan` sizes the job here (tenfold.training) and prices it there (tenfold.cloud)."""
    if args.cloud_command != "plan":
        return cloud_cli.run_command(args)
    from tenfold.presets import resolve_config
    from tenfold.training.launch import check_devices
    from tenfold.training.workload import measure_workload
    flags = {k: getattr(args, k) for k in TrainConfig.__dataclass_fields__}
    devices = None if args.devices is None else check_devices(args.devices)
    work = measure_workload(resolve_config(flags.get("preset"), flags), devices)
    cloud_cli.cloud_module()
    from tenfold.cloud.plan import plan
    from tenfold.cloud.present import format_plan
    result = plan(work, args.region, args.profile, spot=not args.on_demand)
    print(json.dumps(result, indent=2) if args.json else format_plan(result))
    return 0


def cmd_models(args) -> int:
    from tenfold.models import list_models
    print("\n".join(list_models()))
    return 0


def add_use_commands(sub) -> None:
    """`export` and `serve`: a trained run taken away as ONNX, or shown on a local page."""
    p = sub.add_parser("export", help="the model with its preprocessing inside, as an ONNX file",
                       description="Write RUN_DIR's model as ONNX: input uint8 RGB images (N, H, W, 3) at the run's "
                                   "image size, output class probabilities (N, classes); class names and image size "
                                   "in its metadata. Verified with onnxruntime before it is kept.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the file format (onnx, the default)")
    p.add_argument("--out", help="the file to write (default RUN_DIR/model.onnx)")
    p = sub.add_parser("serve", help="a local web page and JSON API that classify images with a run",
                       description="Serve RUN_DIR: GET / a page (drop an image, see its top-3), POST /predict an "
                                   "image -> JSON, GET /health. Local only unless --host says otherwise.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this "
                                                       "machine only; 0.0.0.0: every network)")
    p.add_argument("--port", type=int, default=8000, help="the port (default 8000; 0: any free one)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--tta", type=int, choices=[0, 1, 2], help="test-time views (default: the run's own)")


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
    p.add_argument("--tta", type=int, choices=[0, 1, 2], help="test-time views (default: the run's own)")
    p = sub.add_parser("predict", help="top-3 classes with probabilities for image files")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("images", metavar="IMAGE", nargs="+")
    p.add_argument("--top", type=positive_int, default=3, help="how many classes to show (default 3)")
    p.add_argument("--tta", type=int, choices=[0, 1, 2], help="test-time views (default: the run's own)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p = sub.add_parser("report", help="plots and a self-contained report.html of a run, written into it",
                       description="Write curves.png, confusion.png, per_class_accuracy.png, predictions.png and "
                                   "report.html into RUN_DIR; prints report.html's path.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data", help="judge on this data's test split (default: the run's own test split, else "
                                  "its validation split)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress messages while reading the data")
    add_use_commands(sub)
    p = sub.add_parser("bench", help="time the seed's LeNet-5 epoch on each device here, beside the seed's numbers")
    p.add_argument("--data", help="train on this data and report accuracy too (default: synthetic, timing only)")
    p.add_argument("--epochs", type=positive_int, default=3, help="epochs per device; the first is not timed (default 3)")
    p.add_argument("--device", action="append", help="a device to time (repeatable; default: every device here)")
    p.add_argument("--batch-size", type=positive_int, help="images per step (default: tenfold's)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    cloud_cli.add_parser(sub)
    sub.add_parser("models", help="list the registered models")
    pr = sub.add_parser("presets", help="list the presets for --preset, with their expected accuracy and time")
    pr.add_argument("--json", action="store_true", help="print them as JSON")
    pr.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True,
                    help="estimate each preset's time on this machine from a few measured steps (default; cached)")
    return parser


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "report": cmd_report,
            "export": cmd_export, "serve": cmd_serve, "bench": cmd_bench,
            "cloud": cmd_cloud, "models": cmd_models, "presets": cmd_presets}


SIGNALLED: list[int] = []  # the signals that arrived: an error they caused mid-write still exits 130/143


def terminated(signum, frame):
    SIGNALLED.append(signum)
    raise Terminated()


def interrupted(signum, frame):
    SIGNALLED.append(signum)
    raise KeyboardInterrupt


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
    signal.signal(signal.SIGTERM, terminated)  # a stop (spot notice, shutdown) ends like Ctrl-C: nothing half-written
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, interrupted)
    try:
        return COMMANDS[args.command](args)
    except Terminated:
        say("terminated" + resume_hint(args))
        return EXIT_TERMINATED
    except TenfoldError as e:
        if SIGNALLED:
            stopped = SIGNALLED[0] == signal.SIGTERM
            say(("terminated" if stopped else "\ninterrupted") + resume_hint(args))
            return EXIT_TERMINATED if stopped else EXIT_INTERRUPTED
        if os.environ.get(envvars.DEBUG):  # the whole chain: what tenfold said, and what caused it
            traceback.print_exception(e)
        say(f"error: {e}", str(e))
        return EXIT_ERROR
    except KeyboardInterrupt:
        say(f"\ninterrupted{resume_hint(args)}")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `tenfold ... | head`: the reader left; nothing to say, as cat and grep do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug or an environment fault: still one line, traceback on request
        if SIGNALLED:  # a signal interrupted a write (torch's zip writer turns it into RuntimeError): still a stop
            stopped = SIGNALLED[0] == signal.SIGTERM
            say(("terminated" if stopped else "\ninterrupted") + resume_hint(args))
            return EXIT_TERMINATED if stopped else EXIT_INTERRUPTED
        if os.environ.get(envvars.DEBUG):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        say(f"error: unexpected {e.__class__.__name__}: {first} (set TENFOLD_DEBUG=1 for the traceback)",
            f"{e.__class__.__name__}: {first}")
        return EXIT_ERROR
    finally:  # past this point there is nothing to save: a late SIGTERM (a launcher stopping its workers) just ends us
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if signal.getsignal(signal.SIGINT) is interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def resume_hint(args) -> str:
    """After Ctrl-C or SIGTERM in `tenfold train`: the real command to continue, when an epoch was saved."""
    if args.command != "train":
        return ""
    run = sys.modules.get("tenfold.training.run")
    active = run.ACTIVE if run is not None else {}
    run_dir = active.get("run_dir") or args.resume or args.out  # a launcher knows its run by its flags
    if not run_dir:
        return ""
    # the checkpoint on disk is the truth: a signal between its write and the run noting it must not hide it
    saved = bool(active.get("saved")) or os.path.exists(os.path.join(run_dir, "checkpoint.pt"))
    if not saved:
        return f" (no epoch of {run_dir} was finished, so nothing was saved)"
    import shlex
    devices = f" --devices {args.devices}" if args.devices else ""
    return f" (finished epochs are saved; continue with: tenfold train --resume {shlex.quote(str(run_dir))}{devices})"


def say(line: str, cause: str | None = None) -> None:
    """The last word on stderr; a worker of `tenfold train --devices` leaves its error to the launcher instead
    (and says nothing when the launcher stops it)."""
    from tenfold.errors import in_launched_worker, record_worker_error
    if not in_launched_worker():
        print(line, file=sys.stderr)
    elif cause:
        record_worker_error(cause)
