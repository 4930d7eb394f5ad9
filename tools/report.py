#!/usr/bin/env python3
"""The federation's HTML report (issue #21): each VM's boot timeline as a chart and the run's
loss and accuracy per round as plots, in one self-contained file (inline SVG and CSS, no
external assets, no network), for people who would rather look than read logs.

Input: a run record, the JSON `make demo` and `make e2e` write next to the report
(`record()` builds it from what they collected: each node's `/status` document when it became
ready, and each round's run state as the SuperLink's `/status` showed it):

    {"title": "...", "final": {"status": "completed", "round": 3, ...},
     "nodes": [{"name": "superlink", "role": "superlink", "ready_after_s": 61.2,
                "status": {<the node's /status document: phase, timeline.steps, sections>}}],
     "rounds": [{"run_id": 1, "round": 1, "loss": 0.31, "accuracy": 0.947, "after_s": 157}]}

    tools/report.py RECORD.json OUT.html
"""
import html
import json
import math
import os
import subprocess
import sys
from html.parser import HTMLParser

OUTCOME_COLOURS = {"ok": "#2e7d32", "warning": "#f9a825", "skipped": "#9e9e9e", "failed": "#c62828", "running": "#1565c0"}
FONT = "font-family:system-ui,sans-serif"


def esc(v):
    return html.escape(str(v), quote=True)


def nice_ticks(lo, hi, n=5):
    """About `n` round tick values covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def fmt(v):
    return f"{v:g}" if abs(v) >= 0.01 or v == 0 else f"{v:.3g}"


def timeline_svg(node):
    """One VM's boot steps as a Gantt chart: a bar per step from its start to its end, seconds
    since the VM's kernel started, coloured by outcome."""
    steps = node.get("status", {}).get("timeline", {}).get("steps", [])
    name = node.get("name", "?")
    row, left, width, top = 22, 110, 560, 24
    right = 60  # room for the last bar's duration label
    if not steps:
        return f'<p class="empty">{esc(name)}: no boot steps recorded.</p>'
    end = max(s["start_s"] + (s.get("duration_s") or 0) for s in steps)
    start = min(s["start_s"] for s in steps)
    ticks = nice_ticks(0 if start < end * 0.5 else start, end)
    lo, hi = ticks[0], ticks[-1]
    x = lambda t: left + (t - lo) / (hi - lo) * width  # noqa: E731
    height = top + row * len(steps) + 30
    out = [f'<svg class="chart timeline" data-chart="timeline-{esc(name)}" data-steps="{len(steps)}" '
           f'xmlns="http://www.w3.org/2000/svg" width="{left + width + right}" height="{height}" '
           f'viewBox="0 0 {left + width + right} {height}" role="img" aria-label="boot timeline of {esc(name)}">',
           f'<text x="{left}" y="14" style="{FONT};font-size:12px;fill:#555">seconds since the kernel started</text>']
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top - 4}" y2="{height - 26}" stroke="#e0e0e0"/>'
                   f'<text x="{x(t):.1f}" y="{height - 12}" text-anchor="middle" style="{FONT};font-size:11px">{fmt(t)}</text>')
    for i, s in enumerate(steps):
        y = top + i * row
        d = s.get("duration_s") or 0
        outcome = s.get("outcome", "ok")
        w = max(x(s["start_s"] + d) - x(s["start_s"]), 2)
        tip = f"{s['name']}: {outcome}, {d:.3f}s from {s['start_s']:.3f}s" + (f" ({s['detail']})" if s.get("detail") else "")
        out.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" style="{FONT};font-size:12px">{esc(s["name"])}</text>'
                   f'<rect class="step" data-outcome="{esc(outcome)}" x="{x(s["start_s"]):.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" '
                   f'fill="{OUTCOME_COLOURS.get(outcome, "#555")}"><title>{esc(tip)}</title></rect>'
                   f'<text x="{x(s["start_s"]) + w + 4:.1f}" y="{y + 14}" style="{FONT};font-size:10px;fill:#555">{d:.2f}s</text>')
    out.append("</svg>")
    return "".join(out)


def line_svg(chart, label, points, unit=""):
    """`points` [(round, value)] as a line with dots; round on x, `label` on y."""
    points = [(r, v) for r, v in points if v is not None]
    if not points:
        return f'<p class="empty">No {esc(label)} recorded.</p>'
    left, width, top, height = 60, 420, 20, 200
    rounds = [r for r, _ in points]
    values = [v for _, v in points]
    xt = list(range(min(rounds), max(rounds) + 1)) if max(rounds) - min(rounds) <= 20 else nice_ticks(min(rounds), max(rounds))
    pad = (max(values) - min(values)) * 0.1 or abs(values[0]) * 0.1 or 0.1
    yt = nice_ticks(min(values) - pad, max(values) + pad)
    x = lambda r: left + (r - xt[0]) / ((xt[-1] - xt[0]) or 1) * width  # noqa: E731
    y = lambda v: top + height - (v - yt[0]) / ((yt[-1] - yt[0]) or 1) * height  # noqa: E731
    W, H = left + width + 30, top + height + 40
    out = [f'<svg class="chart plot" data-chart="{esc(chart)}" data-points="{len(points)}" xmlns="http://www.w3.org/2000/svg" '
           f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{esc(label)} per round">']
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + width}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#e0e0e0"/>'
                   f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" style="{FONT};font-size:11px">{fmt(t)}{unit}</text>')
    for t in xt:
        out.append(f'<text x="{x(t):.1f}" y="{top + height + 16}" text-anchor="middle" style="{FONT};font-size:11px">{fmt(t)}</text>')
    out.append(f'<text x="{left + width / 2}" y="{top + height + 34}" text-anchor="middle" style="{FONT};font-size:12px">round</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(r):.1f},{y(v):.1f}" for i, (r, v) in enumerate(points))
    out.append(f'<path d="{path}" fill="none" stroke="#1565c0" stroke-width="2"/>')
    for r, v in points:
        out.append(f'<circle class="point" cx="{x(r):.1f}" cy="{y(v):.1f}" r="4" fill="#1565c0"><title>round {r}: {esc(label)} {v:.4f}</title></circle>')
    out.append("</svg>")
    return "".join(out)


# Runs in the browser that opens the report: records each chart's laid-out size on it
# (data-rendered="WxH"), so a headless browser's DOM dump shows the charts were drawn.
RENDER_CHECK = """<script>
document.querySelectorAll('svg.chart').forEach(function (s) {
  var b = s.getBBox(); s.setAttribute('data-rendered', Math.round(b.width) + 'x' + Math.round(b.height));
});
document.body.setAttribute('data-charts', document.querySelectorAll('svg.chart[data-rendered]').length);
</script>"""


def render(rec):
    """The whole HTML document for run record `rec`."""
    title = rec.get("title") or "flower-init federation"
    final = rec.get("final") or {}
    rounds = sorted(rec.get("rounds") or [], key=lambda r: (str(r.get("run_id")), r.get("round", 0)))
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>",
             "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}h1{font-size:1.4em}"
             "h2{font-size:1.15em;margin-top:1.6em}table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}"
             ".legend span{display:inline-block;margin-right:1em}.legend i{display:inline-block;width:12px;height:12px;margin-right:4px}"
             ".plots{display:flex;flex-wrap:wrap;gap:2em}.empty{color:#888}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    if final:
        parts.append(f"<p>Run {esc(final.get('run_id', ''))}: <b>{esc(final.get('status', '?'))}</b> after round "
                     f"{esc(final.get('round', '?'))} of {esc(final.get('num_rounds', '?'))}"
                     f"{', strategy ' + esc(final['strategy']) if final.get('strategy') else ''}.</p>")
    parts.append("<h2>Boot timeline per VM</h2><p class=\"legend\">"
                 + "".join(f'<span><i style="background:{c}"></i>{o}</span>' for o, c in OUTCOME_COLOURS.items()) + "</p>")
    for n in rec.get("nodes") or []:
        ready = n.get("ready_after_s")
        rss = ((n.get("status") or {}).get("sections") or {}).get("init", {}).get("peak_rss_kib")
        doc = n.get("status") or {}
        facts = [f"role {esc(n.get('role', '?'))}", f"phase {esc(doc.get('phase', '?'))}"]
        if doc.get("failure"):
            facts.append(f"failed at {esc(doc['failure'].get('step', '?'))}: {esc(doc['failure'].get('reason', ''))}")
        if ready is not None:
            facts.append(f"/health 200 {ready:.1f}s after start")
        if rss:
            facts.append(f"flower-init peak RSS {esc(rss)} KiB")
        parts.append(f"<h3>{esc(n.get('name', '?'))}</h3><p>{', '.join(facts)}</p>{timeline_svg(n)}")
    parts.append("<h2>Training</h2><div class=\"plots\">")
    parts.append(f"<div><h3>Loss per round</h3>{line_svg('loss', 'loss', [(r['round'], r.get('loss')) for r in rounds])}</div>")
    parts.append(f"<div><h3>Accuracy per round</h3>{line_svg('accuracy', 'accuracy', [(r['round'], r.get('accuracy')) for r in rounds])}</div></div>")
    if rounds:
        parts.append("<table><tr><th>run</th><th>round</th><th>loss</th><th>accuracy</th><th>after</th></tr>")
        for r in rounds:
            cell = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
            after = f"+{r['after_s']:.0f}s" if r.get("after_s") is not None else ""
            parts.append(f"<tr><td>{esc(r.get('run_id'))}</td><td>{esc(r['round'])}</td><td>{cell(r.get('loss'))}</td>"
                         f"<td>{cell(r.get('accuracy'))}</td><td>{after}</td></tr>")
        parts.append("</table>")
    parts.append(RENDER_CHECK + "</body></html>\n")
    return "".join(parts)


def record(title, nodes, rounds_seen, round_times, final):
    """The run record from what the federation scripts collected: `nodes` with `name`,
    `vm.role` or `role`, `timeline` (the steps of their `/status` when ready), `ready_after`,
    `status_doc` (optional, the whole `/status`); `rounds_seen` {(run_id, round): run state};
    `round_times` {(run_id, round): seconds since training began}."""
    out_nodes = []
    for n in nodes:
        role = getattr(getattr(n, "vm", None), "role", None) or getattr(n, "role", None)
        doc = getattr(n, "status_doc", None) or {"timeline": {"steps": getattr(n, "timeline", [])}}
        out_nodes.append({"name": n.name, "role": role, "ready_after_s": getattr(n, "ready_after", None), "status": doc})
    rounds = [{"run_id": rid, "round": rnd, "loss": r.get("loss"), "accuracy": r.get("accuracy"),
               "after_s": round_times.get((rid, rnd))} for (rid, rnd), r in sorted(rounds_seen.items())]
    return {"title": title, "final": final, "nodes": out_nodes, "rounds": rounds}


def write(rec, json_path, html_path):
    """Write the record and its report; returns the report's path."""
    with open(json_path, "w") as f:
        json.dump(rec, f, indent=1)
    with open(html_path, "w") as f:
        f.write(render(rec))
    return html_path


class Dom(HTMLParser):
    """The elements of a DOM dump: (tag, attrs) in order, and the text."""

    def __init__(self):
        super().__init__()
        self.elements, self.text, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), list(self.stack)))
        if tag not in ("meta", "br", "hr", "img", "input", "link"):  # HTML void elements
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)


def chromium_dom(path, profile):
    """The DOM after the page's script ran, as headless Chromium dumps it (no network)."""
    cmd = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--dump-dom", f"file://{os.path.abspath(path)}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0 or "<svg" not in r.stdout:
        raise AssertionError(f"chromium rc {r.returncode}: {r.stderr[-2000:]}")
    return r.stdout


def check_charts(dom_text, rec):
    """What every report of `rec` shows once a browser has laid it out (`dom_text`, from
    chromium_dom): a timeline per node and the loss and accuracy charts, each laid out at a
    real size, a bar per boot step, a point per round with a value. Returns (dom, charts)."""
    dom = Dom()
    dom.feed(dom_text)
    charts = [(a, st) for t, a, st in dom.elements if t == "svg" and "chart" in a.get("class", "")]
    rounds = rec["rounds"]
    # A node with no boot steps recorded (a drill's node the harness never saw ready) is said
    # in words, not drawn.
    nodes = [n for n in rec["nodes"] if ((n.get("status") or {}).get("timeline") or {}).get("steps")]
    want = {f"timeline-{n['name']}" for n in nodes} | {"loss", "accuracy"}
    got = {a["data-chart"] for a, _ in charts}
    assert got == want, f"charts {sorted(got)}, want {sorted(want)}"
    for a, _ in charts:
        w, h = (int(v) for v in a.get("data-rendered", "0x0").split("x"))
        assert w > 100 and h > 50, f"chart {a['data-chart']} laid out at {w}x{h}"
    body = next(a for t, a, _ in dom.elements if t == "body")
    assert body.get("data-charts") == str(len(want)), body

    def inside(tag, cls, chart):
        return sum(1 for t, a, st in dom.elements if t == tag and cls in a.get("class", "")
                   and any(s[0] == "svg" and s[1].get("data-chart") == chart for s in st))

    for n in nodes:
        steps = n["status"]["timeline"]["steps"]
        assert inside("rect", "step", f"timeline-{n['name']}") == len(steps), n["name"]
    text = "".join(dom.text)
    for n in rec["nodes"]:
        if n not in nodes:
            assert f"{n['name']}: no boot steps recorded." in text, n["name"]
    assert inside("circle", "point", "loss") == len([r for r in rounds if r.get("loss") is not None])
    assert inside("circle", "point", "accuracy") == len([r for r in rounds if r.get("accuracy") is not None])
    return dom, len(charts)


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: tools/report.py RECORD.json OUT.html")
    with open(sys.argv[1]) as f:
        rec = json.load(f)
    with open(sys.argv[2], "w") as f:
        f.write(render(rec))
    print(sys.argv[2])


if __name__ == "__main__":
    main()
