"""Reference answers, and the tables and target verdicts of ``RESULTS.md``."""

from __future__ import annotations

import base64
import contextlib
import http.client
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import PY, ROOT

NOTES = ROOT / "profile_notes.md"
#: Written by ``hung_requests.py`` (a script of its own: it needs a server per hang rate).
HUNG = ROOT / "hung_requests.md"


# -- what the server answers ---------------------------------------------------------------


def reference_tops(url: str, model: str, key: str, paths: list[Path]) -> dict[str, str | None]:
    """The server's ``top`` for each image (by file name), one plain request at a time."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    tops: dict[str, str | None] = {}
    for path in paths:
        body = base64.b64encode(path.read_bytes())
        conn.request("POST", f"/{model}?api_key={key}", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"reference request for {path} answered {response.status}")
        tops[path.name] = json.loads(payload).get("top") or None
    conn.close()
    return tops


def upload_bytes(paths: list[Path], extra: tuple[str, ...]) -> int:
    """Bytes of request bodies batchclassify sends for ``paths`` with these flags (measured
    by running its own encoder), for servers that do not count bytes received."""
    from batchclassify.config import MAX_UPLOAD_BYTES
    from batchclassify.inputs.encoding import read_and_encode

    if "--max-size" not in extra:
        return sum(4 * ((p.stat().st_size + 2) // 3) for p in paths)
    max_size = int(extra[extra.index("--max-size") + 1])
    return sum(
        len(read_and_encode(str(p), max_upload_bytes=MAX_UPLOAD_BYTES, max_size=max_size).body)
        for p in paths
    )


def index_peak_mb(count: int) -> tuple[float, float]:
    """Peak memory (MB) of batchclassify's resume index after ``count // 10`` and ``count``
    ids: the growth regime 4 allows. Measured with tracemalloc on the real ``IdIndex``, so
    it includes the transient buffers of each doubling."""
    import tracemalloc

    from batchclassify.output.idindex import IdIndex

    tracemalloc.start()
    try:
        index = IdIndex()
        peaks = []
        for mark in (count // 10, count):
            for i in range(len(index), mark):
                index.set(f"u{i}", 1)
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
    finally:
        tracemalloc.stop()
    return peaks[0], peaks[1]


# -- one line per run ------------------------------------------------------------------------


def one_line(run: Any) -> str:
    extra = ""
    if run.rss_at:
        extra = " rss@" + ",".join(f"{int(k):,}={v:.0f}MB" for k, v in run.rss_at.items())
    if run.bytes_uploaded is not None:
        extra += f" up={run.bytes_uploaded / 1e6:.1f}MB"
    return (
        f"  {run.client:<13} {run.label:<16} c={run.concurrency:<4} n={run.items:<7} "
        f"{run.rate:8.1f} img/s  cpu {run.cpu_per_1k:6.2f} s/1k  rss {run.maxrss_mb:6.0f} MB  "
        f"429 {run.http_429!s:>5}  ok {run.ok}/{run.items} wrong {run.ok - run.correct}  "
        f"srv cpu {run.server_cpu:5.1f}s  exit {run.exit_code}{extra}"
    )


# -- RESULTS.md ---------------------------------------------------------------------------


def _load(folder: Path) -> dict[str, dict[str, Any]]:
    """The last saved run of each regime; regime 4's files (one per size) are merged."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("regime-*.json")):
        data = json.loads(path.read_text())
        key = data["regime"].split("-")[0]
        if key in found:
            found[key]["runs"] += data["runs"]
        else:
            found[key] = data
    return found


def working_time(wall: float, startup: float) -> float:
    """Wall time minus start-up; runs too short for that to mean anything keep their wall."""
    return wall - startup if wall >= 2 * startup else wall


def _rate(r: dict[str, Any]) -> float:
    return float(r["items"]) / working_time(r["wall"], r["startup_wall"])


def _ok_rate(r: dict[str, Any]) -> float:
    return float(r["ok"]) / working_time(r["wall"], r["startup_wall"])


def _cpu1k(r: dict[str, Any]) -> float:
    return max(r["cpu"] - r["startup_cpu"], 0.0) / max(r["items"], 1) * 1000


def _srv1k(r: dict[str, Any]) -> float:
    return float(r["server_cpu"]) / max(r["items"], 1) * 1000


def _busy(r: dict[str, Any]) -> float:
    """Share of the client's core it used while working (start-up excluded)."""
    return max(r["cpu"] - r["startup_cpu"], 0.0) / working_time(r["wall"], r["startup_wall"])


def _srv_busy(r: dict[str, Any]) -> float:
    return float(r["server_cpu"]) / working_time(r["wall"], r["startup_wall"])


def _med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _correct(r: dict[str, Any]) -> str:
    wrong = r["ok"] - r["correct"]
    text = f"{r['correct']:,}/{r['items']:,}"
    if wrong:
        text += f" ({wrong} wrong)"
    return text


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def code_version() -> str:
    """The commit the package was at, and whether its working tree had local changes."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=ROOT.parent
    ).stdout.strip()


def machine(data: dict[str, dict[str, Any]]) -> list[str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for name in ("batchclassify", "aiohttp", "anyio", "orjson", "pybase64", "pillow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    sdk = ROOT / ".venv-sdk" / "bin" / "python"
    if sdk.exists():
        out = subprocess.run(
            [str(sdk), "-c", "import importlib.metadata as m; print(m.version('inference-sdk'))"],
            capture_output=True,
            text=True,
        )
        versions.append(f"inference-sdk {out.stdout.strip()} (benchmark venv only)")
    runs = sorted(
        (d["meta"].get("date", "?"), key, d["meta"].get("code", "?")) for key, d in data.items()
    )
    when = "; ".join(f"regime {key}: {date}, code {code}" for date, key, code in runs)
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- CPU: {model}, {os.cpu_count()} cores; {mem:.0f} GB RAM; {platform.platform()}",
        f"- Python {platform.python_version()} ({PY})",
        f"- {', '.join(versions)}",
        f"- runs: {when}"
        + (" (`-dirty`: the package had uncommitted changes then)" if "dirty" in when else ""),
    ]


def render(folder: Path, *, quick: bool) -> str:
    data = _load(folder)
    lines = ["# Benchmark results", ""]
    if quick:
        lines += ["**Quick smoke run: tiny sizes, figures not meaningful.**", ""]
    caveat = folder / "CAVEAT.md"
    if caveat.exists():
        lines += [caveat.read_text(encoding="utf-8").strip(), ""]
    lines += [
        "Produced by `python benchmarks/run.py` (see `benchmarks/README.md`). "
        "Server and client are separate processes; with `taskset` the server runs on CPU 1 "
        "and each client on CPU 0, so a client never has more than one core. "
        "Images/s and CPU per 1,000 images exclude each client's start-up (interpreter, "
        "imports, first connection: measured once with a one-image run and subtracted). "
        "Peak RSS is the client process's `ru_maxrss`; 429s and bytes come from the server's "
        "counters; *correct* counts rows whose `top` equals the server's answer for that "
        "image, obtained beforehand one request at a time.",
        "",
        "## Machine",
        "",
        *machine(data),
        "",
    ]
    targets: list[str] = []
    sections = {"1": _regime_1, "2": _regime_2, "3": _regime_3, "4": _regime_4, "5": _regime_5}
    for key, section in sections.items():
        if key in data:
            lines += section(data[key], targets)
    lines += ["## Targets (issue 5)", "", *targets, ""]
    if HUNG.exists():
        lines += [HUNG.read_text(encoding="utf-8").strip(), ""]
    if NOTES.exists():
        lines += [NOTES.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)


def _regime_1(data: dict[str, Any], targets: list[str]) -> list[str]:
    runs = data["runs"]
    lines = [
        "## 1. CPU-bound (server latency 0, hash model, small images)",
        "",
        f"{data['meta'].get('items')} images of 640x480 (~50 KB; 2,000 files, hardlinked). "
        f"Medians over {1 + max(r['repeat'] for r in runs)} repeats (client order rotated "
        "each repeat).",
        "",
        "| concurrency | client | images/s | client CPU s / 1k img | client core busy "
        "| server CPU s / 1k img | server core busy | peak RSS MB | 429s | correct |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    by: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        by[(r["concurrency"], r["client"])].append(r)
    for (conc, client), rs in sorted(by.items()):
        lines.append(
            f"| {conc} | {client} | {_med([_rate(r) for r in rs]):.0f} "
            f"| {_med([_cpu1k(r) for r in rs]):.2f} | {_med([_busy(r) for r in rs]):.0%} "
            f"| {_med([_srv1k(r) for r in rs]):.2f} | {_med([_srv_busy(r) for r in rs]):.0%} "
            f"| {_med([r['maxrss_mb'] for r in rs]):.0f} "
            f"| {sum(r['http_429'] or 0 for r in rs)} | {_correct(rs[-1])} |"
        )
    lines.append("")
    for conc in sorted({r["concurrency"] for r in runs}):
        ratios_rate, ratios_cpu, ratios_sdk, capacity_sdk = [], [], [], []
        for rep in sorted({r["repeat"] for r in runs}):
            pick = {r["client"]: r for r in runs if r["concurrency"] == conc and r["repeat"] == rep}
            bc, lean, sdk = pick.get("batchclassify"), pick.get("lean"), pick.get("sdk")
            if bc and lean:
                ratios_rate.append(_rate(bc) / _rate(lean))
                ratios_cpu.append(_cpu1k(bc) / max(_cpu1k(lean), 1e-9))
            if bc and sdk:
                ratios_sdk.append(_rate(bc) / _rate(sdk))
                capacity_sdk.append(_cpu1k(sdk) / max(_cpu1k(bc), 1e-9))
        busy = _med([_srv_busy(r) for r in runs if r["concurrency"] == conc])
        capped = " (the server's core was saturated)" if busy >= 0.9 else ""
        if ratios_rate:
            rate, cpu = _med(ratios_rate), _med(ratios_cpu)
            targets.append(
                f"- CPU-bound c={conc}: images/s ≥ 0.95× lean — {rate:.2f}× "
                f"{_verdict(rate >= 0.95)}{capped}; client CPU per "
                f"image ≤ 1.15× lean — {cpu:.2f}× {_verdict(cpu <= 1.15)}"
            )
        if ratios_sdk:
            sdk_ratio, capacity = _med(ratios_sdk), _med(capacity_sdk)
            targets.append(
                f"- CPU-bound c={conc}: ≥ 2× Roboflow's client — {sdk_ratio:.2f}× measured "
                f"{_verdict(sdk_ratio >= 2)}{capped}; {capacity:.2f}× "
                f"in images per client CPU second {_verdict(capacity >= 2)}"
            )
    return lines


def _regime_2(data: dict[str, Any], targets: list[str]) -> list[str]:
    meta = data["meta"]
    runs = data["runs"]
    mean = meta.get("mean_latency")
    lines = [
        "## 2. Latency-bound, long tail",
        "",
        f"Server: `{' '.join(meta.get('knobs', []))}` (latency scale {meta.get('latency_scale')}"
        + (f"; mean latency {mean * 1000:.0f} ms" if mean else "")
        + "). Ideal = concurrency ÷ mean latency. *steady* is the rate between 10% and 90% "
        "of the rows (no ramp-up, no drain of the last slow requests); the SDK writes its "
        "rows only at the end, so it has only the end-to-end figure.",
        "",
        "| concurrency | client | images | images/s end to end | steady images/s | % of ideal "
        "(end to end / steady) | client CPU s / 1k | server core busy | peak RSS MB | correct |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(runs, key=lambda r: (r["concurrency"], r["client"])):
        ideal = r["concurrency"] / mean if mean else None
        steady = r.get("steady")
        pct = "–"
        if ideal:
            pct = f"{_rate(r) / ideal:.0%}"
            if steady:
                pct += f" / {steady / ideal:.0%}"
        lines.append(
            f"| {r['concurrency']} | {r['client']} | {r['items']:,} | {_rate(r):.1f} "
            f"| {f'{steady:.1f}' if steady else '–'} | {pct} | {_cpu1k(r):.2f} "
            f"| {_srv_busy(r):.0%} | {r['maxrss_mb']:.0f} "
            f"| {_correct(r)} |"
        )
    lines.append("")
    for conc in sorted({r["concurrency"] for r in runs}):
        pick = {r["client"]: r for r in runs if r["concurrency"] == conc}
        bc, sdk = pick.get("batchclassify"), pick.get("sdk")
        if bc and mean:
            ideal = conc / mean
            e2e = _rate(bc) / ideal
            steady = (bc.get("steady") or 0) / ideal
            targets.append(
                f"- Long tail c={conc}: ≥ 90% of concurrency ÷ mean latency — "
                f"{e2e:.0%} end to end, {steady:.0%} steady {_verdict(max(e2e, steady) >= 0.9)}"
            )
        if bc and sdk:
            ratio = _rate(bc) / _rate(sdk)
            targets.append(
                f"- Long tail c={conc}: ≥ 3× Roboflow's client — {ratio:.1f}× "
                f"{_verdict(ratio >= 3)}"
            )
    return lines


def _after(r: dict[str, Any], skip: float = 5.0) -> tuple[float, int] | None:
    """(ok/s, 429s) from the server's counters after the first ``skip`` seconds of a run."""
    timeline = r.get("extra", {}).get("server_timeline") or []
    later = [p for p in timeline if p[0] >= skip]
    if len(later) < 2:
        return None
    (t0, ok0, r0), (t1, ok1, r1) = later[0], later[-1]
    return (ok1 - ok0) / max(t1 - t0, 1e-3), r1 - r0


def _regime_3(data: dict[str, Any], targets: list[str]) -> list[str]:
    runs = data["runs"]
    lines = [
        "## 3. Rate-bound (server allows 20 requests/s, 429 + Retry-After above)",
        "",
        "*after 5 s*: from the server's counters, polled every 0.5 s, leaving out the first "
        "5 seconds (where the adaptive controller meets the limit for the first time).",
        "",
        "| client | mode | images | ok | ok images/s end to end | % of 20/s | 429s "
        "| 429s / requests | after 5 s: ok/s, 429s | client CPU s / 1k | correct | exit | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    notes = {
        "lean": "no retries: a 429 is a failed row; the few ok rows came in one burst",
        "sdk": "retries 429 three times 1 s apart, then raises for the whole list: no rows",
    }
    for r in runs:
        n429 = r["http_429"] or 0
        requests = r["ok"] + n429
        after = _after(r)
        after_text = f"{after[0]:.2f}, {after[1]}" if after else "–"
        lines.append(
            f"| {r['client']} | {r['label']} | {r['items']} | {r['ok']} | {_ok_rate(r):.2f} "
            f"| {f'{_ok_rate(r) / 20:.0%}' if r['wall'] >= 5 else '– (ran < 5 s)'} | {n429} "
            f"| {n429 / max(requests, 1):.1%} | {after_text} "
            f"| {_cpu1k(r):.2f} | {_correct(r)} | {r['exit_code']} "
            f"| {notes.get(r['client'], '')} |"
        )
    lines.append("")
    for r in runs:
        if r["client"] != "batchclassify":
            continue
        n429 = r["http_429"] or 0
        share = _ok_rate(r) / 20
        after = _after(r)
        steady = f" (after 5 s: {after[0] / 20:.1%}, {after[1]} × 429)" if after else ""
        if r["label"].startswith("--rate-limit"):
            targets.append(
                f"- Rate-bound, `--rate-limit 20`: ≥ 97% of 20/s end to end and zero 429s — "
                f"{share:.1%}, {n429} × 429 {_verdict(share >= 0.97 and n429 == 0)}{steady}"
            )
        else:
            frac = n429 / max(r["ok"] + n429, 1)
            targets.append(
                f"- Rate-bound, adaptive: ≥ 90% of 20/s and < 5% of requests 429 — {share:.1%}, "
                f"{frac:.1%} 429 over a {r['items']}-image run "
                f"{_verdict(share >= 0.9 and frac < 0.05)}{steady}"
            )
    return lines


def _regime_4(data: dict[str, Any], targets: list[str]) -> list[str]:
    runs = data["runs"]
    lines = [
        "## 4. Memory (URL items: the server fetches them; latency 0)",
        "",
        "RSS is the client's `VmHWM` (peak so far) when the 10% and the 100% rows had been "
        "written; *whole run* is `ru_maxrss` at exit. *index* is what batchclassify's resume "
        "index (`IdIndex`) itself allocates between those two points, peaks of its doublings "
        "included (measured with tracemalloc on the real class).",
        "",
        "| client | items | images/s | client CPU s / 1k | server core busy "
        "| peak RSS at 10% MB | peak RSS at 100% MB | whole run MB | growth MB (index MB) "
        "| growth beyond the index, bytes / item | correct |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        marks = dict(sorted((int(k), v) for k, v in r["rss_at"].items()))
        at10 = marks.get(r["items"] // 10, float("nan"))
        at100 = marks.get(r["items"], r["maxrss_mb"])
        growth = at100 - at10
        index = r.get("extra", {}).get("index_growth_mb", 0.0)
        beyond = (growth - index) * 2**20 / max(r["items"] * 0.9, 1)
        lines.append(
            f"| {r['client']} | {r['items']:,} | {_rate(r):.0f} | {_cpu1k(r):.2f} "
            f"| {_srv_busy(r):.0%} | {at10:.0f} | {at100:.0f} | {r['maxrss_mb']:.0f} "
            f"| {growth:.1f} ({index:.1f}) | {beyond:.1f} | {_correct(r)} |"
        )
        if r["client"] == "batchclassify":
            peak = max(at100, r["maxrss_mb"])
            targets.append(
                f"- Memory ({r['items']:,} items): peak RSS < 150 MB — {peak:.0f} MB "
                f"{_verdict(peak < 150)}; growth 10%→100% {growth:.1f} MB, of which the resume "
                f"index {index:.1f} MB: {beyond:+.1f} bytes/item beyond it "
                f"{_verdict(beyond <= 4)}"
            )
    lines.append("")
    return lines


def _regime_5(data: dict[str, Any], targets: list[str]) -> list[str]:
    runs = data["runs"]
    lines = [
        "## 5. Large images (4000x3000 JPEG, several MB; some with EXIF orientation)",
        "",
        "Over loopback, bytes cost nothing, so sending originals is as fast as the client and "
        "server can base64 and decode them. The *uplink* rows run against a server that reads "
        "request bodies no faster than 100 Mbit/s in total (`--upload-mbps 100`), as a link "
        "to a hosted API would. *unpinned*: the client may use both cores (shared with the "
        "server).",
        "",
        "| client | upload | images/s | MB uploaded / image "
        "| client CPU s / 1k | peak RSS MB | server CPU s / 1k | correct |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        per = (r["bytes_uploaded"] or 0) / max(r["items"], 1) / 1e6
        lines.append(
            f"| {r['client']} | {r['label']} | {_rate(r):.1f} "
            f"| {per:.2f} | {_cpu1k(r):.1f} | {r['maxrss_mb']:.0f} | {_srv1k(r):.1f} "
            f"| {_correct(r)} |"
        )
    lines.append("")
    pick = {r["label"]: r for r in runs if r["client"] == "batchclassify"}
    small, big = pick.get("--max-size 640"), pick.get("originals")
    if small and big and small["bytes_uploaded"] and big["bytes_uploaded"]:
        fewer = big["bytes_uploaded"] / small["bytes_uploaded"]
        faster = _rate(small) / _rate(big)
        text = (
            f"- Large images: ≥ 10× fewer bytes with `--max-size 640` — {fewer:.1f}× "
            f"{_verdict(fewer >= 10)}; higher images/s — {faster:.2f}× over loopback with one "
            f"client core {_verdict(faster > 1)}"
        )
        small_u, big_u = pick.get("--max-size 640, unpinned"), pick.get("originals, unpinned")
        if small_u and big_u:
            text += f", {_rate(small_u) / _rate(big_u):.2f}× unpinned"
        small_l = next((r for k, r in pick.items() if k.startswith("--max-size 640, 1")), None)
        big_l = next((r for k, r in pick.items() if k.startswith("originals, 1")), None)
        if small_l and big_l:
            behind = _rate(small_l) / _rate(big_l)
            text += f"; behind a 100 Mbit/s uplink {behind:.1f}× {_verdict(behind > 1)}"
        targets.append(text)
    return lines
