"""imgclf: one command line for the image-classifier pipeline, on AWS or on a local run (--local [DIR]).

Exit status: 0 done; 1 AWS refused or something is missing; 2 bad input; 3 `status --watch` ended in a failed
execution; 130 interrupted. Every failure is one line on stderr (IMGCLF_DEBUG=1 adds the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, ParamValidationError

import stackfacts as facts
from awsshapes import s3_uri
from cli import config, load
from cli.aws import console_execution_url, s3_location
from cli.backend import Backend, aws_backend, local_backend
from cli.errors import EXIT_ERROR, EXIT_USAGE, CliError, UsageError, describe_aws_error, error_code
from ml import contract

EXIT_EXECUTION_FAILED = 3
BackendFactory = Callable[[argparse.Namespace], Backend]


# --- backends --------------------------------------------------------------------------------------------------
def default_backend(args: argparse.Namespace) -> Backend:
    if args.local is not None:
        return local_backend(args.local, args.stack)
    return aws_backend(args.region, args.profile, args.stack or config.DEFAULT_STACK_NAME)


# --- verbs -----------------------------------------------------------------------------------------------------
def dataset_location(backend: Backend, bucket: str | None, prefix: str | None) -> tuple[str, str, str | None]:
    """(bucket, key prefix, the stack's dataset root or None): flags first, then the stack's outputs."""
    root = None
    if bucket is None or prefix is None:
        root = backend.optional_output(facts.OUTPUT_DATASET)
    if root:
        root_bucket, root_prefix = s3_location(root)
        return bucket or root_bucket, (prefix if prefix is not None else root_prefix).strip("/"), root
    bucket = bucket or backend.output(facts.OUTPUT_BUCKET, "to know where to upload (or pass --bucket)")
    return bucket, (prefix if prefix is not None else facts.DATA_PREFIX).strip("/"), None


def cmd_upload_data(args: argparse.Namespace, backend_factory: BackendFactory) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from cli import dataset
    from cli.views import console

    # The layout first: a dataset that cannot be used is refused before AWS (credentials, region) is needed.
    layout = dataset.check_layout(Path(args.folder), args.ignore_non_images)
    if layout.problems:
        detail = "; ".join(layout.problems)
        raise UsageError(f"{dataset.printable(args.folder)} is not an ImageFolder dataset ({len(layout.problems)} "
                         f"problem{'s' if len(layout.problems) > 1 else ''}): {detail}")
    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    out = console()
    counts = ", ".join(f"{layout.counts.get(s, 0)} {s}" for s in contract.CHANNELS)
    try:
        backend = backend_factory(args)
        bucket, prefix, root = dataset_location(backend, args.bucket, args.prefix)
        plan = dataset.plan_sync(backend.s3, layout, bucket, prefix, bucket_may_be_new=backend.is_local)
    except (CliError, ClientError, BotoCoreError) as exc:
        if not args.dry_run:
            raise
        reason = exc.message if isinstance(exc, CliError) else describe_aws_error(exc)
        out.print(f"{len(layout.classes.get(contract.TRAIN, []))} classes, {counts} images: the layout is valid")
        out.print(f"dry run: the upload was not planned ({reason})", highlight=False, markup=False)
        return 0
    target = s3_uri(bucket, prefix + "/" if prefix else "")
    if root and not target.startswith(root):
        print(f"warning: {target} is outside the stack's dataset location {root}: the pipeline's SageMaker role "
              "cannot read it", file=sys.stderr)
    out.print(f"{len(layout.classes.get(contract.TRAIN, []))} classes, {counts} images; "
              f"{len(plan.uploads)} to upload ({plan.bytes / 1e6:.1f} MB), {plan.unchanged} unchanged")
    if args.dry_run:
        out.print(f"dry run: nothing uploaded to {target}")
        return 0
    with Progress(TextColumn("uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TextColumn("{task.fields[files]} files"), console=console(stderr=True),
                  disable=not plan.uploads) as progress:
        task = progress.add_task("upload", total=plan.bytes, files=0)
        done = [0]

        def file_done(_: Path) -> None:
            done[0] += 1
            progress.update(task, files=done[0])

        dataset.upload(backend.s3, plan, on_bytes=lambda n: progress.advance(task, n), on_file=file_done,
                       jobs=args.jobs)
    out.print(f"dataset at {target}  (train on it with: imgclf start --dataset {target})")
    _hint_weights(backend)
    return 0


def _hint_weights(backend: Backend) -> None:
    """After an upload: say so when the jobs' pretrained weights are not staged yet (`start` would refuse)."""
    from cli import weights

    with contextlib.suppress(CliError):
        where = weights.target(backend)
        if where is not None and weights.staged(backend.s3, where) is False:
            print(f"hint: {weights.missing_message(where)}", file=sys.stderr)


def cmd_stage_weights(args: argparse.Namespace, backend: Backend) -> int:
    from cli import weights
    from cli.views import console

    weights.stage(backend, args.file, console())
    return 0


def cmd_start(args: argparse.Namespace, backend: Backend) -> int:
    if backend.is_local:
        raise CliError("a local execution is started with `make demo` (it runs the same state machine on this "
                       "machine and records it for --local)", EXIT_USAGE)
    state_machine = backend.output(facts.OUTPUT_STATE_MACHINE, "to start an execution")
    document: dict = {}
    if args.dataset:
        bucket, key = s3_location(args.dataset)
        dataset = s3_uri(bucket, key.rstrip("/") + "/")
        root = backend.optional_output(facts.OUTPUT_DATASET)
        if root and not dataset.startswith(root):
            raise UsageError(f"--dataset {dataset} must be under {root} (the only place the pipeline's SageMaker "
                             "role can read; `imgclf upload-data` puts datasets there)")
        document[facts.INPUT_DATASET] = dataset
    for key, value in ((facts.INPUT_MAX_JOBS, args.max_jobs), (facts.INPUT_MAX_PARALLEL_JOBS, args.parallel),
                       (facts.INPUT_MIN_TEST_ACCURACY, args.min_test_accuracy),
                       (facts.INPUT_WARM_START, args.warm_start)):
        if value is not None:
            document[key] = value
    if args.max_jobs is not None and args.parallel is not None and args.parallel > args.max_jobs:
        raise UsageError("--parallel cannot exceed --max-jobs")
    if args.input:
        try:
            extra = json.loads(args.input)
        except ValueError as exc:
            raise UsageError(f"--input is not JSON: {exc}") from None
        if not isinstance(extra, dict):
            raise UsageError("--input must be a JSON object")
        document.update(extra)
    _check_quotas(args, backend, document)
    _check_weights(backend)
    request = {"stateMachineArn": state_machine, "input": json.dumps(document)}
    if args.name:
        request["name"] = args.name
    try:
        started = backend.stepfunctions.start_execution(**request)
    except ClientError as exc:
        if error_code(exc) == "ExecutionAlreadyExists":
            raise CliError(f"an execution named {args.name!r} already exists: choose another --name") from None
        raise
    arn = started["executionArn"]
    print(arn)
    print(f"console: {console_execution_url(arn, backend.region)}", file=sys.stderr)
    print(f"follow it with: imgclf status {arn.rsplit(':', 1)[-1]} --watch", file=sys.stderr)
    return 0


def _check_quotas(args: argparse.Namespace, backend: Backend, document: dict) -> None:
    """Refuse, in one line each, an execution the account's training-instance quotas cannot run (SageMaker would
    fail its tuning job with ResourceLimitExceeded after the execution started)."""
    from cli import quotas

    if args.skip_quota_check:
        return
    parallel = document.get(facts.INPUT_MAX_PARALLEL_JOBS)
    found, note = quotas.check(backend.servicequotas, backend.stack_outputs(), parallel if isinstance(
        parallel, int) and not isinstance(parallel, bool) else None, backend.region)
    if note:
        print(f"note: {note}", file=sys.stderr)
    if found:
        raise CliError("; ".join(found) + " (--skip-quota-check starts it anyway)")


def _check_weights(backend: Backend) -> None:
    """Refuse an execution whose tuning trials would all fail at SageMaker's data download: the stack's jobs read
    pretrained weights that were never staged."""
    from cli import weights

    where = weights.target(backend)
    if where is None:
        return
    found = weights.staged(backend.s3, where)
    if found is False:
        raise CliError(weights.missing_message(where))
    if found is None:
        print(f"note: could not check that {where.uri} exists; starting anyway", file=sys.stderr)


def cmd_status(args: argparse.Namespace, backend: Backend) -> int:
    from rich.live import Live

    from cli.loaders import resolve_execution
    from cli.views import console, load_snapshot, status_view

    if args.interval <= 0:
        raise UsageError("--interval must be positive")
    arn = resolve_execution(backend, args.execution)
    snapshot = load_snapshot(backend, arn)
    out = console()
    if not args.watch or snapshot.execution.terminal:
        out.print(status_view(snapshot))
    else:
        with Live(status_view(snapshot), console=out, auto_refresh=False) as live:
            while not snapshot.execution.terminal:
                time.sleep(args.interval)
                snapshot = load_snapshot(backend, arn)
                live.update(status_view(snapshot), refresh=True)
    if args.watch and snapshot.execution.status != "SUCCEEDED":
        return EXIT_EXECUTION_FAILED
    return 0


def cmd_best(args: argparse.Namespace, backend: Backend) -> int:
    from cli.loaders import load_execution, resolve_execution
    from cli.views import best_of, best_table, console

    execution = load_execution(backend, resolve_execution(backend, args.execution))
    best = best_of(backend, execution)
    if args.json:
        print(json.dumps(best, indent=2))
    else:
        console().print(best_table(best))
    return 0


def cmd_report(args: argparse.Namespace, backend: Backend) -> int:
    from cli.loaders import resolve_execution
    from cli.report import PredictionsRequest, build_report

    # A local run has its model and test set on this machine: its report has the confusion matrix by default.
    evaluate = args.evaluate or (backend.is_local and not args.no_evaluate and args.predictions is None
                                 and args.model is None and args.test_data is None)
    request = PredictionsRequest(file=args.predictions, model=args.model, test_data=args.test_data,
                                 from_run=evaluate, by_default=evaluate and not args.evaluate)
    arn = resolve_execution(backend, args.execution)
    rendered = build_report(backend, arn, Path(args.out), request)
    print(rendered.html)
    print(rendered.markdown)
    for figure in rendered.figures.values():
        print(figure)
    return 0


def cmd_predict(args: argparse.Namespace, backend_factory: BackendFactory) -> int:
    import requests

    from cli import predict
    from cli.views import console

    if args.top_k is not None and args.top_k < 1:
        raise UsageError("--top-k must be at least 1")
    bodies = [Path(p) for p in args.images]
    for path in bodies:
        predict.read_image(path)  # refuse bad input before sending anything
    region = args.region
    base = args.url or os.environ.get("IMGCLF_API_URL")
    if not base:
        if args.local is not None:
            recorded = None
            if Path(args.local).is_dir():
                backend = backend_factory(args)
                with contextlib.suppress(CliError):
                    recorded = backend.optional_output(facts.OUTPUT_API_URL)
            base = predict.local_api(recorded)
        else:
            backend = backend_factory(args)
            base = backend.output(facts.OUTPUT_API_URL, "to know where the API is (or pass --url)")
            region = region or backend.region
    url = predict.predict_url(base, args.top_k)
    credentials = None
    if predict.wants_signature(url, args.auth):
        credentials = predict.credentials_for(args.profile, required=args.auth == "iam")
    results = []
    with requests.Session() as session:
        for path in bodies:
            results.append(predict.post_image(session, url, path, auth=args.auth, region=region,
                                              credentials=credentials, timeout=args.timeout,
                                              api_key=args.api_key or os.environ.get("IMGCLF_API_KEY")))
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps([r.as_json() for r in results], indent=2))
    else:
        from rich.table import Table

        out = console()
        for r in results:
            if r.error:
                continue
            table = Table(title=f"{r.image}  (model {r.model}, {r.latency_ms:.0f} ms)", title_justify="left")
            table.add_column("#", justify="right")
            table.add_column("label")
            table.add_column("score", justify="right")
            for i, p in enumerate(r.predictions, 1):
                table.add_row(str(i), str(p.get("label")), f"{float(p.get('score', 0)):.4f}")
            out.print(table)
    for r in failed:
        error = r.error or {}
        print(f"error: {r.image}: HTTP {r.status} {error.get('code')}: {error.get('message')}", file=sys.stderr)
    return EXIT_ERROR if failed else 0


def cmd_teardown(args: argparse.Namespace, backend: Backend) -> int:
    from rich.table import Table

    from cli import teardown
    from cli.views import console

    outputs, note = teardown.stack_outputs(backend)
    if note and not args.prefix:
        print(f"note: {note}", file=sys.stderr)
    prefix = teardown.resource_prefix(outputs, backend, args.prefix)
    todo = teardown.plan(backend, prefix, outputs)
    out = console()
    if not todo.items:
        out.print(f"nothing to delete: no endpoint, endpoint config or model named {prefix}* in {backend.source}")
        return 0
    table = Table(title=f"To delete from {backend.source} (names starting with {prefix})", title_justify="left")
    table.add_column("kind")
    table.add_column("name")
    for kind, name in todo.items:
        table.add_row(kind, name)
    out.print(table)
    if args.dry_run:
        out.print("dry run: nothing deleted")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            out.print("nothing deleted: pass --yes to delete these without a prompt")
            return 0
        answer = input(f"Delete these {len(todo)} resources? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            out.print("nothing deleted")
            return 0

    def report(kind: str, name: str, problem: str | None) -> None:
        if problem is None:
            out.print(f"deleted {kind} {name}")
        elif problem == "already gone":
            out.print(f"{kind} {name} was already gone")
        else:
            print(f"error: could not delete {kind} {name}: {problem}", file=sys.stderr)

    return EXIT_ERROR if teardown.execute(backend, todo, report) else 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sagemaker-image-classifier")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


# --- parser ----------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        # Show defaults that say something (not None/False, and not already in the text).
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _target_options(local: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("where to look")
    if local:
        group.add_argument("--local", nargs="?", const=config.DEFAULT_LOCAL_DIR, default=None, metavar="DIR",
                           help=f"read a local run's output folder instead of AWS (default DIR: "
                                f"{config.DEFAULT_LOCAL_DIR}, what `make demo` writes)")
    group.add_argument("--stack", default=None,
                       help=f"CloudFormation stack name (default: ${config.STACK_ENV} or {config.DEFAULT_STACK_NAME})")
    group.add_argument("--region", default=None, help="AWS region (default: your AWS configuration)")
    group.add_argument("--profile", default=None, help="AWS profile (default: your AWS configuration)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", title="verbs (imgclf VERB --help for each)")
    target = _target_options()

    def verb(name: str, help_: str, description: str | None = None) -> argparse.ArgumentParser:
        return verbs.add_parser(name, help=help_, description=description or help_, parents=[target],
                                formatter_class=_Formatter)

    p = verb("upload-data", "check an ImageFolder dataset and sync it to the stack's bucket",
             "Check DIR's layout (train/ valid/ test/, one folder of images per class), then upload what S3 does "
             "not already hold, with a progress bar. With --local, copy into the run folder's s3/<bucket>/.")
    p.add_argument("folder", metavar="DIR", help="dataset folder holding train/ valid/ test/")
    p.add_argument("--prefix", default=None,
                   help=f"key prefix in the bucket (default: the stack's {facts.OUTPUT_DATASET} output, else "
                        f"{facts.DATA_PREFIX})")
    p.add_argument("--bucket", default=None, help="bucket (default: the stack's)")
    p.add_argument("--ignore-non-images", action="store_true", help="skip non-image files instead of refusing")
    p.add_argument("--dry-run", action="store_true", help="check and plan only")
    p.add_argument("--jobs", type=int, default=8, metavar="N", help="uploads at once")
    p.set_defaults(run=cmd_upload_data)

    p = verb("start", "start an execution of the deployed state machine",
             "Start the stack's state machine (tune, train with Debugger/Profiler, gate, deploy); print the "
             "execution ARN and its console link. Local runs are started with `make demo`.")
    p.add_argument("--dataset", default=None, metavar="S3_PREFIX",
                   help=f"S3 prefix holding train/ valid/ test/ (default: the stack's {facts.OUTPUT_DATASET})")
    p.add_argument("--max-jobs", type=int, default=None, metavar="N", help="tuning trials in total")
    p.add_argument("--parallel", type=int, default=None, metavar="N", help="tuning trials at once")
    p.add_argument("--min-test-accuracy", type=float, default=None, metavar="X",
                   help="deploy only when the final job's test accuracy reaches X")
    p.add_argument("--warm-start", default=None, metavar="TUNING_JOB", help="warm-start from this tuning job")
    p.add_argument("--name", default=None, help="execution name (default: generated by Step Functions)")
    p.add_argument("--input", default=None, metavar="JSON", help="more execution input, merged over the above")
    p.add_argument("--skip-quota-check", action="store_true",
                   help="start without comparing the run's instances with the account's SageMaker quotas")
    p.set_defaults(run=cmd_start)

    p = verb("stage-weights", "stage the backbone's pretrained weights where every training job reads them",
             "Check FILE (a state dict for the stack's backbone: torch.load(weights_only=True), keys and shapes) "
             f"and upload it to the stack's {facts.OUTPUT_PRETRAINED_URI}. Without FILE, build it from "
             "torchvision's default ImageNet weights (downloads: run it on a machine with internet). Jobs download "
             "nothing themselves. With --local, copy into the run folder's s3/<bucket>/.")
    p.add_argument("file", nargs="?", metavar="FILE", help="a .pt state dict (default: torchvision's)")
    p.set_defaults(run=cmd_stage_weights)

    for name, help_ in (("status", "live view of an execution: state, trials, training job, rule verdicts"),
                        ("best", "the best trial's hyperparameters and objective")):
        p = verb(name, help_)
        p.add_argument("execution", nargs="?", metavar="EXECUTION",
                       help="execution name or ARN (default: the newest execution)")
        if name == "status":
            p.add_argument("--watch", action="store_true",
                           help="follow until the execution ends (exit 3 unless it succeeded)")
            p.add_argument("--interval", type=float, default=10.0, help="seconds between refreshes with --watch")
            p.set_defaults(run=cmd_status)
        else:
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
            p.set_defaults(run=cmd_best)

    p = verb("report", "write the results report (HTML, Markdown, PNG figures)",
             "Write report.html (self-contained), report.md and the PNG figures into --out: tuning trials, "
             "objective plots, training curves, rule verdicts and health checks, test accuracy, and - given "
             "predictions on the test set - a confusion matrix and sample predictions.")
    p.add_argument("execution", nargs="?", metavar="EXECUTION",
                   help="execution name or ARN (default: the newest execution)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    evaluation = p.add_argument_group("predictions on the test set (for the confusion matrix)")
    evaluation.add_argument("--evaluate", action="store_true",
                            help="run the final job's model.tar.gz on its test channel (downloads both; the "
                                 "default for --local)")
    evaluation.add_argument("--no-evaluate", action="store_true", help="--local: no evaluation of the model")
    evaluation.add_argument("--model", type=Path, default=None, metavar="DIR", help="a model directory (ml/train.py)")
    evaluation.add_argument("--test-data", type=Path, default=None, metavar="DIR",
                            help="an ImageFolder test split (one folder per class)")
    evaluation.add_argument("--predictions", type=Path, default=None, metavar="FILE",
                            help="JSON or CSV rows with label, predicted[, score, image]")
    p.set_defaults(run=cmd_report)

    p = verb("predict", "classify images through the REST API (AWS or `make serve`)",
             f"POST each IMAGE to <API>{contract.PREDICT_PATH} and print the top labels. The API is --url, else "
             "$IMGCLF_API_URL, else the stack's API URL output (with --local: the run's recorded URL or "
             f"{config.LOCAL_API_URL}, what `make serve` listens on).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG/... files")
    p.add_argument("--url", default=None, help="API base URL (a stage URL or http://127.0.0.1:PORT)")
    p.add_argument("--top-k", type=int, default=None, metavar="N",
                   help=f"labels per image (the API's default is {contract.DEFAULT_TOP_K})")
    p.add_argument("--auth", choices=("auto", "iam", "none"), default="auto",
                   help="SigV4-sign requests: auto signs for API Gateway hosts when credentials exist")
    p.add_argument("--api-key", default=None, help="x-api-key header (or $IMGCLF_API_KEY)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(run=cmd_predict)

    p = verb("load", "a bounded rising-then-falling load on the API, with latency and instances over time",
             load.__doc__.split("\n\n")[2].replace("\n", " "))
    p.add_argument("--image", required=True, metavar="IMAGE", help="the image every request POSTs")
    p.add_argument("--url", default=None, help="API base URL (default with --local: the run's recorded URL)")
    p.add_argument("--steps", default=load.DEFAULT_STEPS, metavar="RPS:SECONDS,...",
                   help=f"offered requests/s and for how long, in turn (at most {load.MAX_SECONDS} s in all)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between report lines")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    p.set_defaults(run=load.cmd_load)

    p = verb("teardown", "delete the endpoints, endpoint configs and models the state machine created",
             "Delete what the state machine created outside CloudFormation (so `cdk destroy` leaves it running): "
             "endpoints, endpoint configs and models whose names start with the prefix, and the stack's endpoint. "
             "Lists them and asks first; --yes deletes without asking.")
    p.add_argument("--prefix", default=None,
                   help=f"name prefix (default: the stack's {facts.OUTPUT_RESOURCE_PREFIX} output, else "
                        f"{facts.RESOURCE_PREFIX})")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(run=cmd_teardown)
    return parser


POSITIONAL_VERBS = frozenset({"upload-data", "stage-weights", "status", "best", "report", "predict"})


def untangle_local(argv: list[str]) -> list[str]:
    """`status --local run-7`, `predict --local cat.png`: argparse would give the positional to --local's optional
    DIR. A value that is not a folder stays a positional, and --local takes its default (`--local=DIR` is always
    the folder)."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb not in POSITIONAL_VERBS:
        return argv
    fixed = list(argv)
    for i, token in enumerate(fixed[:-1]):
        following = fixed[i + 1]
        if token == "--local" and not following.startswith("-") and not _names_a_run_folder(verb, following):
            fixed[i] = f"--local={config.DEFAULT_LOCAL_DIR}"
    return fixed


def _names_a_run_folder(verb: str, token: str) -> bool:
    """Whether `--local TOKEN` means the folder TOKEN. A folder that exists does; so does a path that does not
    exist (an error to report, never a fallback to demo-output/), except an image for `predict`. An execution name
    cannot hold '/' (Step Functions: https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html),
    so a bare word stays the execution."""
    path = Path(token)
    if path.is_dir():
        return True
    if verb == "predict":
        return not path.is_file() and path.suffix.lower() not in contract.IMAGE_EXTENSIONS and "/" in token
    if verb in ("upload-data", "stage-weights"):
        return False
    return "/" in token or token in (".", "..")


def main(argv: Sequence[str] | None = None, backend_factory: BackendFactory | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(untangle_local(list(sys.argv[1:] if argv is None else argv)))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.verb is None:  # `imgclf` alone: what it can do
        parser.print_help()
        return EXIT_USAGE
    factory = backend_factory or default_backend
    try:
        if args.run in (cmd_predict, cmd_upload_data, load.cmd_load):  # they check their input before needing AWS
            return args.run(args, factory)
        return args.run(args, factory(args))
    except CliError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.code
    except ParamValidationError as exc:
        print(f"error: invalid request: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ClientError, BotoCoreError) as exc:
        print(f"error: {describe_aws_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug of ours: still one line, the traceback on request
        if os.environ.get("IMGCLF_DEBUG"):
            traceback.print_exc()
        print(f"error: internal error ({type(exc).__name__}: {exc}); IMGCLF_DEBUG=1 shows the traceback",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
