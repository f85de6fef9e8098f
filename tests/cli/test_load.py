"""`imgclf load`: the step schedule, the open-loop generator and its report, and its one-line refusals."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.load import Step, local_instances, parse_steps, percentile, run_load
from cli.main import main
from tests.support.serve import GOOD_PNG


def test_steps_parse_and_refuse_in_one_line():
    assert parse_steps("0.5:30, 4:90") == [Step(0.5, 30), Step(4, 90)]
    for bad, why in (("x", "RPS:SECONDS"), ("4", "RPS:SECONDS"), ("4:0", "SECONDS > 0"), ("-1:5", "0 <= RPS"),
                     ("nan:5", "0 <= RPS"), ("1:inf", "SECONDS > 0"), ("1:1000,1:1000", "more than")):
        with pytest.raises(ValueError, match=why):
            parse_steps(bad)


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0 and percentile([], 50) is None


def test_run_load_offers_the_steps_and_counts_what_fails():
    calls: list[float] = []
    lock = threading.Lock()

    def send() -> int:
        with lock:
            calls.append(time.monotonic())
            n = len(calls)
        if n % 10 == 0:
            raise ConnectionError("refused")
        return 503 if n % 10 == 5 else 200

    ticks = []
    summary = run_load(send, [Step(40, 1.0), Step(0, 0.5), Step(20, 1.0)], interval=0.5, on_tick=ticks.append,
                       instances=lambda: "1/1")
    assert 50 <= len(calls) <= 62  # 40 + 20 offered, whatever the answers
    assert summary.ok + summary.failed == len(calls)
    assert summary.failed == len([n for n in range(1, len(calls) + 1) if n % 10 in (0, 5)])
    assert any("refused" in f for f in summary.failures) and "HTTP 503" in summary.failures
    assert ticks and all(t.instances == "1/1" for t in ticks) and ticks[-1].elapsed >= 2.4
    assert "instances 1/1" in ticks[0].line()


def test_local_instances_reads_the_stand_ins_state(tmp_path):
    state = tmp_path / "sagemaker" / "hosting" / "state.json"
    read = local_instances(tmp_path, "e")
    assert read() == "?"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"endpoints": {"e": {"variants": {"AllTraffic": {"desired": 3, "current": 2}}}}}))
    assert read() == "2/3"


def test_load_refuses_bad_input_in_one_line(tmp_path, capsys):
    image = tmp_path / "3.png"
    image.write_bytes(GOOD_PNG)
    assert main(["load", "--image", str(image), "--steps", "5", "--url", "http://127.0.0.1:9"]) == 2
    assert main(["load", "--image", str(tmp_path / "none.png"), "--url", "http://127.0.0.1:9"]) == 2
    assert main(["load", "--image", str(image)]) == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "no such image file" in err and "--url" in err and "Traceback" not in err


def test_load_against_a_local_api_reports_and_exits_by_failures(tmp_path, capsys):
    image = tmp_path / "3.png"
    image.write_bytes(GOOD_PNG)
    seen: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(self.rfile.read(int(self.headers["Content-Length"])))
            status = 200 if self.path == "/predict" and self.headers["Content-Type"] == "image/png" else 404
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert main(["load", "--image", str(image), "--url", url, "--steps", "10:1", "--interval", "0.5"]) == 0
        assert len(seen) >= 9 and all(body == GOOD_PNG for body in seen)
        assert main(["load", "--image", str(image), "--url", url + "/nope", "--steps", "5:0.5",
                     "--interval", "0.5"]) == 1
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert "answered, 0 failed" in out and "HTTP 404" in out
