"""The benchmark's report: its Markdown, and writing a section of docs/BENCHMARKS.md."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import psutil


def write_section(path: str, report: str, start: str, end: str) -> None:
    """Replace the part of the file between the `start` and `end` markers (or append it)."""
    target = Path(path)
    text = target.read_text() if target.exists() else ""
    report = report.strip("\n") + "\n"
    if start in text and end in text:
        rest = text[text.index(end) + len(end) :].lstrip("\n")
        text = text[: text.index(start)] + report + ("\n" + rest if rest else "")
    else:
        text = text.rstrip() + "\n\n" + report
    target.write_text(text)


def render(r: dict[str, Any]) -> str:
    raw = r["raw"]["rate"]
    limit = r["raw_async"]["rate"]
    a = r["args"]
    cmd = "make bench" if not a["quick"] else "make bench-quick"
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{cmd}` (`python -m bench.run"
        + (" --quick" if a["quick"] else "")
        + (f" --events {a['events']}" if a["events"] != (300 if a["quick"] else 5000) else "")
        + f"`) on {time.strftime('%Y-%m-%d')}: {platform.platform()}, "
        f"{os.cpu_count()} CPUs, {round(psutil.virtual_memory().total / 2**30, 1)} GiB, "
        f"Python {platform.python_version()}. Everything on loopback: PostgreSQL (fsync on), "
        "Redis, gunicorn (2 processes x 4 threads), the default `celery -A webhooks_project "
        "worker`, beat, an asyncio sink, and the load generator share the machine.",
        "",
        f"Events: {a['events']}, fan-out {a['fanout']}, payload filler {a['payload_bytes']} B, "
        f"{a['batch']} events per batch POST, failing fraction {a['failing_fraction']}.",
        "Ratios are to the raw loop measured in the same run (the machines are shared and noisy).",
        "",
        "| measurement | value | ratio to raw loop |",
        "|---|---|---|",
        f"| raw loop: sign + POST, one process, urllib3 (issue 4's limit) | {raw:.0f} req/s | 1.00 |",
        f"| asyncio limit: sign + POST, one process, aiohttp on uvloop, 32 in flight (issue 15's) | {limit:.0f} req/s | {limit / raw:.2f} |",
        f"| Celery no-op task on Redis (the one-task-per-message floor) | {r['noop']['rate']:.0f} tasks/s | {r['noop']['rate'] / raw:.2f} |",
    ]
    h = r["healthy"]
    lines += [
        f"| pipeline end to end, all healthy (first POST to last receipt, every attempt recorded) | {h['rate']:.0f} deliveries/s | **{h['rate'] / raw:.2f}** ({h['rate'] / limit:.2f} of the asyncio limit) |",
        f"| ingestion through `POST /events/batch/`, alone (worker paused; {r['args']['batch']} events per POST, 4 clients) | {r['ingest']['rate']:.0f} events/s | — |",
        f"| ingestion through `POST /events/batch/`, during the all-healthy run | {h['ingest_rate']:.0f} events/s | — |",
        f"| latency at half peak ({r['paced']['target_rate']:.0f}/s), client's send to receipt: p50 / p99 / mean | {r['paced']['p50_ms']:.1f} / {r['paced']['p99_ms']:.1f} / {r['paced']['mean_ms']:.1f} ms | — |",
        f"| latency at half peak, service's acceptance (event `timestamp`) to receipt: p50 / p99 | {r['paced']['accepted_p50_ms']:.1f} / {r['paced']['accepted_p99_ms']:.1f} ms | — |",
    ]
    floor = r.get("floor")
    if floor:
        lines.append(
            f"| idle floor, one event at a time (median ms): POST to accepted / to claimed / to request / to receipt / to recorded = total POST to receipt | "
            f"{floor['post_to_accepted']:.1f} / {floor['accepted_to_claimed']:.1f} / {floor['claimed_to_request']:.1f} / {floor['request_to_receipt']:.1f} / {floor['receipt_to_recorded']:.1f} = **{floor['total']:.1f} ms** | — |"
        )
    hog = r.get("hog")
    if hog:
        lines += [
            f"| all healthy under a one-core CPU hog (a busy loop) | {hog['rate']:.0f} deliveries/s | {hog['rate'] / raw:.2f} (vs quiet: **{hog['rate'] / h['rate']:.2f}**) |",
            f"| under the hog: acceptance to receipt, longest (the burst's queue) / deliveries the sweeper had to publish or take back | {hog['max_accepted_ms'] / 1000:.1f} s / {hog['swept']} (in {hog['sweeps']} sweeps) | — |",
        ]
    per = {
        name: 1000 * h["processes"][name]["cpu_s"] / max(h["deliveries_ok"], 1)
        for name in ("worker", "postgres", "web")
        if name in h["processes"]
    }
    lines.append(
        "| CPU per delivery in the all-healthy burst: "
        + " / ".join(per)
        + " | "
        + " / ".join(f"{v:.2f}" for v in per.values())
        + f" ms (worker peak RSS {h['processes']['worker']['peak_rss_mb']} MB) | — |"
    )
    for mode, label in (("fail", "answering 500"), ("hang", "hanging past the timeout")):
        if mode not in r:
            continue
        m = r[mode]
        lines += [
            f"| {label}: healthy endpoints' throughput | {m['rate']:.0f} deliveries/s | {m['rate'] / raw:.2f} (vs all healthy: {m['rate'] / h['rate']:.2f}) |",
            f"| {label}: healthy endpoints' latency at half peak, p50 / p99 | {m['paced']['p50_ms']:.1f} / {m['paced']['p99_ms']:.1f} ms | p99 vs all healthy: {m['paced']['p99_ms'] / max(r['paced']['p99_ms'], 1e-9):.2f} |",
            f"| {label}: worker peak RSS / CPU during the burst | {m['processes']['worker']['peak_rss_mb']} MB / {m['processes']['worker']['cpu_s']} s | — |",
        ]

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    pc = r["paced"]
    lines += [
        "",
        "Targets (issue 15, then issue 4's), judged on this run:",
        "",
        "| target | this run | |",
        "|---|---|---|",
        f"| end to end >= 0.6 x the asyncio limit | {h['rate'] / limit:.2f} x | {verdict(h['rate'] / limit >= 0.6)} |",
        f"| p50 <= 20 ms, p99 <= 60 ms at half peak | {pc['p50_ms']:.0f} / {pc['p99_ms']:.0f} ms | {verdict(pc['p50_ms'] <= 20 and pc['p99_ms'] <= 60)} |",
    ]
    if hog:
        lines.append(
            f"| under a one-core hog: >= 0.5 of quiet, none waiting for a sweep | {hog['rate'] / h['rate']:.2f}, {hog['swept']} swept | {verdict(hog['rate'] / h['rate'] >= 0.5 and not hog['swept'])} |"
        )
    lines += [
        f"| ingestion >= 3,000 events/s (alone) | {r['ingest']['rate']:.0f} /s | {verdict(r['ingest']['rate'] >= 3000)} |",
        f"| worker CPU per delivery < 1 ms | {per.get('worker', float('nan')):.2f} ms | {verdict(per.get('worker', 9) < 1)} |",
        f"| (issue 4) end to end >= 0.5 x raw loop | {h['rate'] / raw:.2f} x | {verdict(h['rate'] / raw >= 0.5)} |",
        f"| (issue 4) p99 < 100 ms at half peak (client's send to receipt) | {pc['p99_ms']:.0f} ms | {verdict(pc['p99_ms'] < 100)} |",
    ]
    for mode in ("fail", "hang"):
        if mode in r:
            m = r[mode]
            t_ok = m["rate"] * 2 >= h["rate"]
            p_ok = m["paced"]["p99_ms"] <= 2 * pc["p99_ms"]
            lines.append(
                f"| {mode}: healthy throughput and p99 within 2x of all healthy | "
                f"{h['rate'] / m['rate']:.2f}x slower, p99 {m['paced']['p99_ms'] / pc['p99_ms']:.2f}x | "
                f"{verdict(t_ok and p_ok)} |"
            )
    lines += [
        "",
        f"All-healthy burst: every one of {h['deliveries_ok']} deliveries received, "
        f"{h['attempts_recorded']} attempt rows recorded; p50 / p99 from ingest to receipt "
        f"during the burst {h['p50_ms']:.0f} / {h['p99_ms']:.0f} ms (queueing included). "
        f"Process CPU seconds and peak RSS during the burst: "
        + ", ".join(
            f"{n} {v['cpu_s']} s / {v['peak_rss_mb']} MB" for n, v in h["processes"].items()
        )
        + f"; raw loop CPU {r['raw']['cpu_seconds']:.1f} s for {r['raw']['count']} requests.",
        "",
    ]
    return "\n".join(lines)
