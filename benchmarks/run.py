"""Benchmark batchclassify against a lean aiohttp client and Roboflow's inference_sdk.

    python benchmarks/run.py            # the full run (a few minutes), writes RESULTS.md
    python benchmarks/run.py --quick    # a smoke run with tiny sizes
    python benchmarks/run.py --regimes 1,3

Each regime starts the project's local server in its own process (pinned to CPU 1 when
``taskset`` exists; clients are pinned to CPU 0), then runs the clients one after another
against it. Figures come from outside each client process: wall time, CPU time and peak RSS
from the kernel, 429s and bytes from the server's counters, correctness from the rows.
Benchmarks are not tests: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import clients
import datagen
import report
from harness import ROOT, Server, run_client, steady_rate

DATA = ROOT / "data"
OUT = DATA / "out"
SERVER_CPU = "1"
#: Regime 5's uplink, as a server knob: a typical office or cloud-VM upload bandwidth.
UPLINK_MBPS = 100
CLIENT_CPU = "0"


@dataclass(frozen=True)
class Sizes:
    small: int
    large: int
    memory_items: int
    repeats: int
    cpu_items: int
    tail_items: dict[int, int]
    tail_sdk_chunks: int
    rate_items: int
    rate_adaptive_items: int
    rate_other_items: int
    uplink_items: int


FULL = Sizes(
    small=2000,
    large=100,
    memory_items=100_000,
    repeats=3,
    cpu_items=10_000,
    tail_items={32: 1500, 128: 5000},
    tail_sdk_chunks=4,
    rate_items=600,
    rate_adaptive_items=2400,  # two minutes: "under 5% 429s over a run of a few minutes"
    rate_other_items=200,
    uplink_items=40,
)
QUICK = Sizes(
    small=100,
    large=4,
    memory_items=5000,
    repeats=1,
    cpu_items=100,
    tail_items={32: 200, 128: 400},
    tail_sdk_chunks=2,
    rate_items=60,
    rate_adaptive_items=100,
    rate_other_items=40,
    uplink_items=4,
)


@dataclass
class Run:
    """One client run, measured."""

    regime: str
    client: str
    label: str
    concurrency: int
    items: int
    wall: float
    cpu: float
    maxrss_mb: float
    exit_code: int
    rows: int
    ok: int
    correct: int
    http_429: int | None
    server_cpu: float
    startup_wall: float
    startup_cpu: float
    repeat: int = 0
    requests: int | None = None
    bytes_uploaded: int | None = None
    steady: float | None = None
    rss_at: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Items per second, start-up (interpreter, imports, first connection) excluded."""
        return self.items / report.working_time(self.wall, self.startup_wall)

    @property
    def cpu_per_1k(self) -> float:
        return max(self.cpu - self.startup_cpu, 0.0) / max(self.items, 1) * 1000


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        self.pin = not args.no_pin
        self.clients = tuple(args.clients.split(","))
        self.startup: dict[str, tuple[float, float]] = {}
        self.expected: dict[str, str | None] = {}
        self.expected_hash: dict[str, str | None] = {}  # regime 1's server answers
        self.small: list[Path] = []
        self.large: list[Path] = []
        self.tiny: list[Path] = []

    # -- plumbing -------------------------------------------------------------------------

    def log(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def server(self, name: str, knobs: list[str]) -> Server:
        return Server(knobs, cpu=SERVER_CPU if self.pin else None, log=DATA / f"server-{name}.log")

    def measure(
        self,
        server: Server,
        *,
        regime: str,
        client: str,
        label: str,
        concurrency: int,
        refs: list[str] | None = None,
        manifest: Path | None = None,
        items: int = 0,
        extra: tuple[str, ...] = (),
        milestones: tuple[int, ...] = (),
        repeat: int = 0,
        poll_server: bool = False,
        expected: dict[str, str | None] | None = None,
    ) -> Run:
        """Run one client over ``refs`` (or a ready ``manifest`` of ``items`` lines)."""
        tag = f"r{regime}-{client}-{label}-c{concurrency}".replace(" ", "_").replace("-", "_")
        if refs is not None:
            manifest = clients.write_manifest(OUT / f"{tag}.txt", refs)
            items = len(refs)
        assert manifest is not None
        output = OUT / f"{tag}.jsonl"
        cmd = clients.command(
            client,
            manifest=manifest,
            url=server.url,
            output=output,
            concurrency=concurrency,
            extra=extra,
        )
        before_stats = server.stats()
        before_cpu = server.cpu_seconds()
        proc = run_client(
            cmd,
            output=output,
            cpu=CLIENT_CPU if self.pin else None,
            milestones=milestones,
            sample=0.1 if items < 100_000 else 0.25,
            log=OUT / f"{tag}.log",
            poll=server.stats if poll_server else None,
        )
        server_cpu = server.cpu_seconds() - before_cpu
        after_stats = server.stats()
        checked = clients.check_output(output, expected or self.expected)
        startup_wall, startup_cpu = self.startup.get(client, (0.0, 0.0))
        run = Run(
            regime=regime,
            client=client,
            label=label,
            concurrency=concurrency,
            items=items,
            wall=proc.wall,
            cpu=proc.cpu,
            maxrss_mb=proc.maxrss_mb,
            exit_code=proc.exit_code,
            rows=checked.rows,
            ok=checked.ok,
            correct=checked.correct,
            http_429=_count_429(before_stats, after_stats, checked.http_429_rows),
            server_cpu=server_cpu,
            startup_wall=startup_wall,
            startup_cpu=startup_cpu,
            repeat=repeat,
            requests=_counter(before_stats, after_stats, "requests"),
            bytes_uploaded=_counter(before_stats, after_stats, "bytes_received"),
            steady=steady_rate(proc.timeline, items) if client != "sdk" else None,
            rss_at={str(k): v for k, v in proc.rss_at.items()},
        )
        if proc.polls:
            # (seconds, answered 200, answered 429) since the run started.
            base = before_stats.get("statuses", {})
            run.extra["server_timeline"] = [
                (
                    round(t, 2),
                    int(st.get("statuses", {}).get("200", 0)) - int(base.get("200", 0)),
                    int(st.get("statuses", {}).get("429", 0)) - int(base.get("429", 0)),
                )
                for t, st in proc.polls
                if st
            ]
        self.log(report.one_line(run))
        return run

    def save(self, regime: str, runs: list[Run], meta: dict[str, Any]) -> None:
        folder = DATA / ("results-quick" if self.args.quick else "results")
        folder.mkdir(parents=True, exist_ok=True)
        meta = {**meta, "date": time.strftime("%Y-%m-%d %H:%M %Z"), "code": report.code_version()}
        payload = {"regime": regime, "meta": meta, "runs": [asdict(r) for r in runs]}
        (folder / f"regime-{regime}.json").write_text(json.dumps(payload, indent=1))

    # -- setup ----------------------------------------------------------------------------

    def prepare(self) -> None:
        sizes = self.sizes
        self.small = datagen.ensure_images(DATA / "small", sizes.small, large=False, log=self.log)
        self.tiny = datagen.ensure_tiny(DATA / "tiny", 48)
        if "5" in self.args.regimes:
            self.large = datagen.ensure_images(
                DATA / "large", sizes.large, large=True, log=self.log
            )
        if "sdk" in self.clients:
            clients.sdk_python(log=self.log)
        with self.server("reference", []) as server:
            self.log(f"reference answers from {server.url} ...")
            self.expected = report.reference_tops(
                server.url, clients.MODEL, clients.API_KEY, self.small + self.large + self.tiny
            )
        if "1" in self.args.regimes:
            with self.server("reference-hash", ["--model-cost", "hash"]) as server:
                self.expected_hash = report.reference_tops(
                    server.url, clients.MODEL, clients.API_KEY, self.small
                )
        with self.server("reference", []) as server:
            one = [str(self.small[0])]
            for client in self.clients:
                walls = []
                for _ in range(2):
                    out = OUT / f"startup-{client}.jsonl"
                    cmd = clients.command(
                        client,
                        manifest=clients.write_manifest(OUT / "startup.txt", one),
                        url=server.url,
                        output=out,
                        concurrency=1,
                    )
                    proc = run_client(cmd, output=None, cpu=CLIENT_CPU if self.pin else None)
                    walls.append((proc.wall, proc.cpu))
                self.startup[client] = min(walls)
                self.log(
                    f"start-up of {client} (1 image): {self.startup[client][0]:.2f} s wall, "
                    f"{self.startup[client][1]:.2f} s CPU"
                )

    # -- regimes --------------------------------------------------------------------------

    def regime_1(self) -> None:
        """CPU-bound: zero latency, small images, concurrency 8 / 32 / 128."""
        # 10,000 items (hardlinked copies of the 2,000 images): at several thousand images/s
        # a shorter run is mostly start-up and drain.
        paths = clients.hardlinked_copies(self.small, self.sizes.cpu_items, DATA / "copies")
        refs = [str(p) for p in paths]
        runs: list[Run] = []
        # The hash model answers without decoding: the server's colour model costs more CPU
        # per image than any client, and would otherwise cap every client at the same rate.
        with self.server("1", ["--model-cost", "hash"]) as server:
            for concurrency in (8, 32, 128):
                for repeat in range(self.sizes.repeats):
                    # Rotate the order so no client always runs first (warm caches, turbo).
                    order = (
                        self.clients[repeat % len(self.clients) :]
                        + self.clients[: repeat % len(self.clients)]
                    )
                    for client in order:
                        runs.append(
                            self.measure(
                                server,
                                regime="1",
                                client=client,
                                label="cpu",
                                refs=refs,
                                concurrency=concurrency,
                                repeat=repeat,
                                expected=self.expected_hash,
                            )
                        )
        self.save("1", runs, {"items": len(refs), "server": "latency 0, hash model"})

    def regime_2(self) -> None:
        """Long tail: heavy-tailed latency, concurrency 32 and 128."""
        scale = self.args.latency_scale
        knobs = ["--latency-distribution", "longtail", "--latency-scale", str(scale)]
        runs: list[Run] = []
        with self.server("2", knobs) as server:
            for concurrency, count in self.sizes.tail_items.items():
                paths = clients.hardlinked_copies(self.small, count, DATA / "copies")
                for client in self.clients:
                    n = count
                    if client == "sdk":
                        # Lock-step chunks: each waits for its slowest request. A few chunks
                        # give its rate; the full list would take many minutes.
                        n = min(count, concurrency * self.sizes.tail_sdk_chunks)
                    runs.append(
                        self.measure(
                            server,
                            regime="2",
                            client=client,
                            label="longtail",
                            refs=[str(p) for p in paths[:n]],
                            concurrency=concurrency,
                        )
                    )
        # The server's long-tail mixture (server.longtail_latency): 97% lognormal(ln 0.17 s, 0.9),
        # 3% lognormal(ln 4.6 s, 0.45); mean = 0.97·0.17·e^(0.9²/2) + 0.03·4.6·e^(0.45²/2).
        mean = (0.97 * 0.17 * math.exp(0.9**2 / 2) + 0.03 * 4.6 * math.exp(0.45**2 / 2)) * scale
        self.save("2", runs, {"latency_scale": scale, "knobs": knobs, "mean_latency": mean})

    def regime_3(self) -> None:
        """Rate-bound: the server allows 20 requests/s, answering 429 + Retry-After above."""
        knobs = ["--rate-limit", "20"]
        runs: list[Run] = []
        count = max(self.sizes.rate_items, self.sizes.rate_adaptive_items)
        paths = clients.hardlinked_copies(self.small, count, DATA / "copies")
        with self.server("3", knobs) as server:
            for label, extra, items in (
                ("--rate-limit 20", ("--rate-limit", "20"), self.sizes.rate_items),
                ("adaptive", (), self.sizes.rate_adaptive_items),
            ):
                if "batchclassify" not in self.clients:
                    break
                runs.append(
                    self.measure(
                        server,
                        regime="3",
                        client="batchclassify",
                        label=label,
                        refs=[str(p) for p in paths[:items]],
                        concurrency=32,
                        extra=extra,
                        poll_server=True,
                    )
                )
                time.sleep(2)  # let the server's window empty between runs
            for client in self.clients:
                if client == "batchclassify":
                    continue
                runs.append(
                    self.measure(
                        server,
                        regime="3",
                        client=client,
                        label="no limiter",
                        refs=[str(p) for p in paths[: self.sizes.rate_other_items]],
                        concurrency=32,
                    )
                )
                time.sleep(2)
        self.save("3", runs, {"server_rate": 20, "knobs": knobs})

    def regime_4(self) -> None:
        """Memory: a million URL items (no file reads) against a zero-latency server.

        The URLs point at the server's own ``/_files/`` route. It keeps the last 64 fetched
        images, so the manifest cycles over 48 tiny JPEGs: the server answers from its cache
        and decodes almost nothing, which leaves it fast enough to keep the client busy.
        """
        count = self.args.memory_items or self.sizes.memory_items
        runs: list[Run] = []
        files = [p.name for p in self.tiny]
        with self.server("4", ["--files-dir", str(DATA / "tiny")]) as server:
            for client in self.clients:
                if client == "sdk":
                    continue  # it would download every URL itself and hold all of them
                n = count if client == "batchclassify" else min(count, self.args.lean_memory)
                manifest = DATA / f"urls-{n}.txt"
                datagen.write_url_manifest(manifest, f"{server.url}/_files", files, n)
                run = self.measure(
                    server,
                    regime="4",
                    client=client,
                    label=f"{n:,} URLs",
                    concurrency=32,
                    manifest=manifest,
                    items=n,
                    milestones=(n // 10, n),
                )
                if client == "batchclassify":
                    at10, at100 = report.index_peak_mb(n)
                    run.extra["index_growth_mb"] = at100 - at10
                runs.append(run)
        # One file per size, so a separate million-item run stays in the report beside the
        # default run's figures.
        self.save(f"4-{count}", runs, {"items": count})

    def regime_5(self) -> None:
        """Large images: originals vs --max-size 640.

        Pinned, the client has one core for decoding and shrinking while the server, which
        stands for a remote machine, has the other. Unpinned runs show what the client does
        when it may use every core (here shared with the server).
        """
        runs: list[Run] = []
        Variant = tuple[str, str, tuple[str, ...], bool]  # client, label, flags, pinned

        def measure_all(server: Server, images: list[Path], variants: list[Variant]) -> None:
            for client, label, extra, pin in variants:
                if client not in self.clients:
                    continue
                saved, self.pin = self.pin, self.pin and pin
                try:
                    run = self.measure(
                        server,
                        regime="5",
                        client=client,
                        label=label,
                        refs=[str(p) for p in images],
                        concurrency=16,
                        extra=extra,
                    )
                finally:
                    self.pin = saved
                if run.bytes_uploaded is None:
                    # A server without the counter: the bodies batchclassify's own encoder
                    # makes with these flags (for the others, the base64 of the files).
                    run.bytes_uploaded = report.upload_bytes(images, extra)
                runs.append(run)

        shrink = ("--max-size", "640")
        with self.server("5", []) as server:
            measure_all(
                server,
                self.large,
                [
                    ("batchclassify", "--max-size 640", shrink, True),
                    ("batchclassify", "originals", (), True),
                    ("lean", "originals", (), True),
                    ("sdk", "originals", (), True),
                    ("batchclassify", "--max-size 640, unpinned", shrink, False),
                    ("batchclassify", "originals, unpinned", (), False),
                ],
            )
        # The same behind a real (server-side) 100 Mbit/s uplink: what downscaling saves on
        # the way to a hosted API. Fewer images: originals take ~0.4 s each through it.
        uplink = self.large[: self.sizes.uplink_items]
        link = f"{UPLINK_MBPS} Mbit/s uplink"
        with self.server("5u", ["--upload-mbps", str(UPLINK_MBPS)]) as server:
            measure_all(
                server,
                uplink,
                [
                    ("batchclassify", f"--max-size 640, {link}", shrink, True),
                    ("batchclassify", f"originals, {link}", (), True),
                    ("lean", f"originals, {link}", (), True),
                ],
            )
        self.save("5", runs, {"images": len(self.large), "uplink_images": len(uplink)})


def _count_429(before: dict[str, Any], after: dict[str, Any], fallback: int) -> int:
    """429s the server sent during the run (its ``statuses`` counter), else counted rows."""
    if "statuses" not in after:
        return fallback
    return int(after["statuses"].get("429", 0)) - int(before.get("statuses", {}).get("429", 0))


def _counter(before: dict[str, Any], after: dict[str, Any], key: str) -> int | None:
    if key not in after:
        return None
    return int(after[key]) - int(before.get(key, 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument(
        "--regimes", default="1,2,3,4,5", help="which regimes to run, e.g. 1,3 (default: all)"
    )
    parser.add_argument(
        "--clients",
        default=",".join(clients.CLIENTS),
        help="which clients to run (default: batchclassify,lean,sdk)",
    )
    parser.add_argument(
        "--latency-scale",
        type=float,
        default=1.0,
        help="regime 2: multiply the hosted-like long-tail latencies (mean 400 ms) by this "
        "(default 1). Below ~0.75 the server's own CPU, not latency, limits c=128 here",
    )
    parser.add_argument(
        "--memory-items",
        type=int,
        default=None,
        help="regime 4: URL items for batchclassify (default 100,000, about a minute; "
        "1000000 takes about 9; --quick 5,000)",
    )
    parser.add_argument(
        "--lean-memory",
        type=int,
        default=30_000,
        help="regime 4: URL items for the lean client (default 30,000)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite RESULTS.md from the saved figures"
    )
    args = parser.parse_args(argv)
    if not args.render_only:
        bench = Bench(args)
        started = time.monotonic()
        bench.prepare()
        for regime in args.regimes.split(","):
            bench.log(f"== regime {regime} ==")
            getattr(bench, f"regime_{regime.strip()}")()
        bench.log(f"benchmark done in {time.monotonic() - started:.0f} s")
    folder = DATA / ("results-quick" if args.quick else "results")
    target = DATA / "RESULTS-quick.md" if args.quick else ROOT / "RESULTS.md"
    text = report.render(folder, quick=args.quick)
    print(text)
    if not args.no_report:
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
