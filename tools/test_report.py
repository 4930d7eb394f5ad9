#!/usr/bin/env python3
"""make report-test (issue #21): the HTML report of a recorded run opens in a real browser
(headless Chromium, Debian's `chromium`) with its charts: each VM's boot timeline (a bar per
step) and loss and accuracy per round (a point per round), laid out with a size; nothing in
it is fetched from anywhere; text from the run (a failure reason with markup) is escaped.

    tools/test_report.py [--fixture tests/fixtures/report/demo-run.json] [--out build/report-test]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import report  # noqa: E402


def check_static(doc):
    """Self-contained: no element that loads anything, no URL but the SVG namespace."""
    urls = set(re.findall(r"(?:https?|ftp)://[^\s\"'<>)]+", doc)) - {"http://www.w3.org/2000/svg"}
    assert not urls, f"external references: {urls}"
    for bad in ("<link", "<img", "<iframe", "<object", "src=", "@import", "url("):
        assert bad not in doc, f"{bad!r} in the report"
    assert "<b>&amp;" not in doc and "&lt;b&gt;" in doc, "the failure reason's markup must be escaped"


def check_dom(dom_text, rec):
    """The checks every report passes (report.check_charts), then what this fixture holds:
    every outcome drawn, names and reasons shown as text."""
    dom, n_charts = report.check_charts(dom_text, rec)
    outcomes = {a.get("data-outcome") for t, a, _ in dom.elements if t == "rect" and "step" in a.get("class", "")}
    assert {"ok", "warning", "failed"} <= outcomes, outcomes
    text = "".join(dom.text)
    assert "supernode-<3>" in text and 'FL_CA_CERT: not a certificate <b>&amp; "quoted"</b>' in text, "names and reasons shown as text"
    return n_charts


def check_record():
    """record(): the run record from what the federation scripts hold."""
    n = types.SimpleNamespace(name="sl", vm=types.SimpleNamespace(role="superlink"), ready_after=12.5,
                              timeline=[{"name": "flower", "start_s": 1.0, "duration_s": 2.0, "outcome": "ok"}])
    rec = report.record("t", [n], {(7, 1): {"loss": 0.5, "accuracy": 0.9, "round": 1}}, {(7, 1): 30.0},
                        {"status": "completed", "round": 1})
    assert rec["nodes"] == [{"name": "sl", "role": "superlink", "ready_after_s": 12.5,
                             "status": {"timeline": {"steps": n.timeline}}}], rec
    assert rec["rounds"] == [{"run_id": 7, "round": 1, "loss": 0.5, "accuracy": 0.9, "after_s": 30.0}], rec
    json.dumps(rec)


def check_wiring(out):
    """The end of `make e2e`/`make demo` (Federation.write_report) writes the report from the
    federation's own fields and prints its path."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    import federation
    federation.BUILD = out
    for f in ("report.json", "report.html"):  # what an earlier run left must not pass for this one's
        if os.path.exists(os.path.join(out, f)):
            os.unlink(os.path.join(out, f))
    node = types.SimpleNamespace(name="supernode-1", vm=types.SimpleNamespace(role="supernode"), ready_after=3.0,
                                 status_doc={"phase": "ready", "timeline": {"steps": [
                                     {"name": "flower", "start_s": 50000.5, "duration_s": 1.5, "outcome": "ok"}]}})
    # A drill's node the harness never saw ready: no steps, said in words, not drawn.
    drill = types.SimpleNamespace(name="supernode-104", vm=types.SimpleNamespace(role="supernode"), ready_after=None)
    fed = types.SimpleNamespace(nodes=[node, drill], rounds_seen={(9, 1): {"loss": 0.3, "accuracy": 0.95}}, round_times={(9, 1): 14.0})
    federation.Federation.write_report(fed, {"status": "completed", "round": 1}, "wiring", strict=True)
    with open(os.path.join(out, "report.json")) as f:
        assert json.load(f)["nodes"][0]["status"]["timeline"]["steps"][0]["start_s"] == 50000.5
    with open(os.path.join(out, "report.html")) as f:
        assert 'data-chart="timeline-supernode-1"' in f.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=os.path.join(ROOT, "tests", "fixtures", "report", "demo-run.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "report-test"))
    a = ap.parse_args()
    t0 = time.monotonic()
    os.makedirs(os.path.join(a.out, "wiring"), exist_ok=True)
    check_record()
    check_wiring(os.path.join(a.out, "wiring"))
    with open(a.fixture) as f:
        rec = json.load(f)
    path = report.write(rec, os.path.join(a.out, "run.json"), os.path.join(a.out, "report.html"))
    with open(path) as f:
        check_static(f.read())
    n = check_dom(report.chromium_dom(path, os.path.join(a.out, "chromium-profile")), rec)
    print(f"report-test: {path}: {n} charts rendered by headless Chromium; passed in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
