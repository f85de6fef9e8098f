"""Local endpoint autoscaling, measured: a rising then falling load, instances, p50 and p99 over time.

    python bench/scale_bench.py [--model DIR|model.tar.gz] [--period 4] [--max-seconds 300] [-c KEY=VALUE ...]

1. The local SageMaker stand-in serves the model as the state machine deploys it (variant AllTraffic, cdk.json's
   instance count): the trained digits model (ml/train.py --preset local, about a minute) unless --model.
2. The scalable target and the target-tracking policy are registered with moto from the request builders the state
   machine uses (infra.sagemaker_requests, cdk.json's local profile), so the stand-in takes them up as in
   `make demo`. The policy's TargetValue and ScaleOutCooldown are cdk.json's; the scale-in cool-down is 30 s (-c
   serving.autoscaling.scale_in_cooldown_s=...) and the metric period --period s instead of CloudWatch's 60 s (the
   3 and 15 datapoints of AWS's alarms are kept), so that out and back in fit in a few minutes.
3. cli.load offers InvokeEndpoint requests on the stand-in's runtime URL (loopback): a rate one instance carries,
   then one that needs three, then the low rate again until the endpoint is back at MinCapacity.
4. One line per period: offered rate, answered and failed requests, p50, p99, instances in service/desired. Then
   the checks: it scaled out; the added instances were in service within ScaleOutCooldown of the end of the first
   datapoint above the target; it scaled back in to MinCapacity; 0 requests failed. Exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import boto3
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli.load import Step, percentile, run_load  # noqa: E402
from infra import load_config_for  # noqa: E402
from infra import sagemaker_requests as req  # noqa: E402

ENDPOINT = "bench-scale"
ROLE = "arn:aws:iam::123456789012:role/bench"
BUCKET = "bench-bucket"
BENCH_CONTEXT = {"profile": "local", "serving.autoscaling.scale_in_cooldown_s": "30"}


def model_and_image(model: Path | None, work: Path) -> tuple[Path, bytes]:
    """A model.tar.gz of the model (trained here unless given) and a held-out digit to POST."""
    if model is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from serve_bench import train_local_model

        model = train_local_model(work)
    else:
        import subprocess

        subprocess.run([sys.executable, "-m", "local.digits", str(work / "digits")], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    image = next(iter(sorted((work / "digits" / "test").rglob("*.png")))).read_bytes()
    if model.is_file():
        return model, image
    archive = work / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model.rglob("*")):
            tar.add(path, arcname=path.relative_to(model).as_posix(), recursive=False)
    return archive, image


def register_policy(cfg, region: str) -> None:
    """The state machine's RegisterScalableTarget and PutScalingPolicy requests, sent to moto (the engine's)."""
    from moto import mock_aws

    with mock_aws():
        aas = boto3.client("application-autoscaling", region_name=region)
        target = req.register_scalable_target(cfg)
        target["ResourceId"] = f"endpoint/{ENDPOINT}/variant/{req.VARIANT_NAME}"
        policy = req.put_scaling_policy(cfg)
        policy["ResourceId"] = target["ResourceId"]
        aas.register_scalable_target(**target)
        aas.put_scaling_policy(**policy)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory or model.tar.gz (default: train)")
    parser.add_argument("--period", type=float, default=4.0, help="metric period, seconds (CloudWatch: 60)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="bound on the load phase")
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                        help="cdk.json context override (e.g. serving.autoscaling.max_instances=3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    context = {**BENCH_CONTEXT, **dict(item.split("=", 1) for item in args.context)}
    cfg = load_config_for(context)
    a = cfg.serving.autoscaling
    target_rpm = a.target_invocations_per_instance
    low_rps = 0.3 * target_rpm / 60  # 30% of one instance's target: one instance, far below the 90% low alarm
    want = min(3, a.max_instances)
    high_rps = (want - 0.2) * target_rpm / 60  # needs `want` instances, each above 90% of the target
    if want <= a.min_instances:
        parser.error("the policy's MaxCapacity leaves no room to scale out")

    import moto.applicationautoscaling.models  # noqa: F401  (loaded before the stand-in, as the engine loads it)

    from local.sagemaker import LocalSageMaker

    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        archive, image = model_and_image(args.model, work)
        with LocalSageMaker(work / "sm", scaling_period_s=args.period, endpoint_startup_timeout=300) as sm:
            (sm.s3.root / BUCKET).mkdir(parents=True)
            shutil.copy(archive, sm.s3.root / BUCKET / "model.tar.gz")
            sm.create_model(ModelName=ENDPOINT, ExecutionRoleArn=ROLE, PrimaryContainer={
                "Image": "pytorch-inference", "ModelDataUrl": f"s3://{BUCKET}/model.tar.gz"})
            sm.create_endpoint_config(EndpointConfigName=ENDPOINT, ProductionVariants=[{
                "VariantName": req.VARIANT_NAME, "ModelName": ENDPOINT, "InstanceType": cfg.serving.instance_type,
                "InitialInstanceCount": max(cfg.serving.instance_count, a.min_instances)}])
            started = time.monotonic()
            sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
            described = sm.wait_for_endpoint(ENDPOINT, timeout=300)
            if described["EndpointStatus"] != "InService":
                print(f"the endpoint did not come up: {described.get('FailureReason')}", file=sys.stderr)
                return 1
            print(f"endpoint InService in {time.monotonic() - started:.1f} s; policy: target "
                  f"{target_rpm:g} invocations/instance/min, instances {a.min_instances}..{a.max_instances}, "
                  f"cool-downs out {a.scale_out_cooldown_s} s / in {a.scale_in_cooldown_s} s; metric period "
                  f"{args.period:g} s", flush=True)
            register_policy(cfg, sm.region)
            timeline: list[tuple[float, int, int]] = []  # (t, in service, desired)

            def instances() -> str:
                (variant,) = sm.describe_endpoint(EndpointName=ENDPOINT)["ProductionVariants"]
                current, desired = variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]
                timeline.append((time.monotonic(), current, desired))
                return f"{current}/{desired}"

            session = requests.Session()
            session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))
            url = f"{sm.runtime_url}/endpoints/{ENDPOINT}/invocations"

            def send() -> int:
                return session.post(url, data=image, headers={"Content-Type": "image/png"}, timeout=60).status_code

            rise = 60.0
            steps = [Step(low_rps, 3 * args.period), Step(high_rps, rise),
                     Step(low_rps, max(args.period, args.max_seconds - 3 * args.period - rise))]
            print(f"load: {low_rps:.2f}/s, then {high_rps:.2f}/s for {rise:g} s, then {low_rps:.2f}/s until back "
                  f"to {a.min_instances} instance(s) (at most {args.max_seconds:g} s in all)", flush=True)
            stop = threading.Event()
            load_start = time.monotonic()
            phase = {"rose": False}

            def tick(t) -> None:
                print(t.line(), flush=True)
                if t.offered_rps >= high_rps:
                    phase["rose"] = True
                if phase["rose"] and t.offered_rps < high_rps and timeline and \
                        timeline[-1][1:] == (a.min_instances, a.min_instances):
                    stop.set()  # back in: the rest of the falling step would only wait

            summary = run_load(send, steps, interval=args.period, on_tick=tick, instances=instances, stop=stop)
            activities = [x for x in sm.scaling.activities if x["EndpointName"] == ENDPOINT]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    # The checks.
    first_out = next((x for x in activities if x["To"] > x["From"]), None)
    peak = max((d for _, _, d in timeline), default=0)
    high_at = load_start + 3 * args.period  # the rise starts here; its first full period ends one period later
    first_high_end = high_at + args.period
    reached = next((t for t, current, desired in timeline if current >= peak and t > high_at), None)
    out_s = (reached - first_high_end) if reached and peak > a.min_instances else math.inf
    back_in = bool(timeline) and timeline[-1][1:] == (a.min_instances, a.min_instances) and peak > a.min_instances
    p50, p99 = percentile(summary.latencies_ms, 50), percentile(summary.latencies_ms, 99)
    figures = {"period_s": args.period, "target_per_instance_per_min": target_rpm, "low_rps": round(low_rps, 2),
               "high_rps": round(high_rps, 2), "peak_instances": peak,
               "scale_out_s_after_first_high_datapoint": round(out_s, 1) if math.isfinite(out_s) else None,
               "scale_out_cooldown_s": a.scale_out_cooldown_s, "back_in": back_in,
               "load_seconds": round(time.monotonic() - load_start, 1), "requests": summary.ok + summary.failed,
               "failed": summary.failed, "p50_ms": p50, "p99_ms": p99,
               "activities": [(x["From"], x["To"], x["InvocationsPerInstance"]) for x in activities]}
    checks = {"scaled out": first_out is not None,
              f"in service within ScaleOutCooldown ({a.scale_out_cooldown_s} s)": out_s <= a.scale_out_cooldown_s,
              f"back in to {a.min_instances}": back_in, "0 failed requests": summary.failed == 0}
    print(json.dumps(figures))
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if summary.failures:
        print("first failures: " + "; ".join(summary.failures))
    if args.json:
        args.json.write_text(json.dumps({**figures, "checks": checks}, indent=2))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
