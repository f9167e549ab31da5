"""The benchmark's table: medians over runs, ratios, targets (issue 5 §2)."""
import statistics

# The SPEC §5 deadline for an idle client that vanishes: idle + interval × count + poll.
DETECT_KA = (1, 1, 2)
DETECT_DEADLINE = DETECT_KA[0] + DETECT_KA[1] * DETECT_KA[2] + 1


def busiest(amounts):
    """The largest of `amounts` as a share of their sum: 1/n when n threads or
    workers share evenly, 1.0 when one has it all; None when there is nothing."""
    total = sum(amounts)
    return max(amounts) / total if total > 0 else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(raw):
    runs = raw["runs"]

    def pick(path):
        return median([dig(record, path) for record in runs])

    rows = []

    def row(name, unit, values, target=None, check=None, fmt="{:.2f}", proxyd=None, versus_proxyd=False):
        """`versus_proxyd`: the ratio and the target are against socket-proxyd, not HAProxy."""
        direct, reaperd, haproxy = values
        peer = proxyd if versus_proxyd else haproxy
        ratio = reaperd / peer if reaperd is not None and peer else None
        met = check(reaperd, ratio) if check and reaperd is not None else None
        rows.append((name, unit, direct, reaperd, haproxy, proxyd, ratio, target, met, fmt))

    if any("throughput" in r for r in runs):
        for streams in (1, 4):
            name = f"throughput, {streams} stream{'s' if streams > 1 else ''} × {raw.get('gib', 1)} GiB"
            values = [pick(["throughput", k, streams, "gbps"]) for k in ("direct", "reaperd", "haproxy")]
            proxyd = pick(["throughput", "socket-proxyd", streams, "gbps"])
            row(name, "GB/s", values, "≥ 1.0× HAProxy", lambda v, r: r is not None and r >= 1.0, proxyd=proxyd)
            if proxyd and streams == 1:
                row("  the same against socket-proxyd", "GB/s", values, "≥ 1.0× socket-proxyd",
                    lambda v, r: r is not None and r >= 1.0, proxyd=proxyd, versus_proxyd=True)
            row(f"  proxy CPU per GB relayed, {streams} stream{'s' if streams > 1 else ''}", "CPU s/GB",
                [None] + [pick_ratio(runs, ["throughput", k, streams, "proxy_cpu_seconds"],
                                     ["throughput", k, streams, "bytes"], 1e9) for k in ("reaperd", "haproxy")],
                fmt="{:.3f}", proxyd=pick_ratio(runs, ["throughput", "socket-proxyd", streams, "proxy_cpu_seconds"],
                                                ["throughput", "socket-proxyd", streams, "bytes"], 1e9))
    if any("rate" in r for r in runs):
        rates = [pick(["rate", k, "rate"]) for k in ("direct", "reaperd", "haproxy")]
        proxyd = pick(["rate", "socket-proxyd", "rate"])
        row("connection rate, 32 clients", "conn/s", rates,
            "≥ 1.1× HAProxy", lambda v, r: r is not None and r >= 1.1, "{:.0f}", proxyd=proxyd)
        if proxyd:
            row("  the same against socket-proxyd", "conn/s", rates, "≥ 1.0× socket-proxyd",
                lambda v, r: r is not None and r >= 1.0, "{:.0f}", proxyd=proxyd, versus_proxyd=True)
        row("connect+64 B echo latency p99", "ms",
            [ms(pick(["rate", k, "p99_us"])) for k in ("direct", "reaperd", "haproxy")],
            "≤ 1.0× HAProxy", lambda v, r: r is not None and r <= 1.0,
            proxyd=ms(pick(["rate", "socket-proxyd", "p99_us"])))
        row("connect+64 B echo latency p50", "ms",
            [ms(pick(["rate", k, "p50_us"])) for k in ("direct", "reaperd", "haproxy")],
            proxyd=ms(pick(["rate", "socket-proxyd", "p50_us"])))
        row("  proxy CPU per relayed connection", "µs",
            [None] + [pick_ratio(runs, ["rate", k, "proxy_cpu_seconds"], ["rate", k, "connections"], 1e6)
                      for k in ("reaperd", "haproxy")], fmt="{:.1f}",
            proxyd=pick_ratio(runs, ["rate", "socket-proxyd", "proxy_cpu_seconds"],
                              ["rate", "socket-proxyd", "connections"], 1e6))
        if raw.get("workers", 1) > 1:
            row("  busiest thread's share of the proxy's CPU (1/n is even)", "share",
                [None] + [pick(["rate", k, "busiest_thread_share"]) for k in ("reaperd", "haproxy")])
    if any("idle" in r for r in runs):
        steps = sorted({int(n) for r in runs for n in r.get("idle", {}).get("reaperd", {}).get("rss", {})})
        for n in steps:
            row(f"idle memory per relayed connection at {n:,}", "B (RSS)",
                [None, pick(["idle", "reaperd", "rss", n]), pick(["idle", "haproxy", "rss", n])],
                "≤ 0.5× HAProxy, ≤ 2 KiB", lambda v, r: r is not None and r <= 0.5 and v <= 2048, "{:.0f}")
        n = steps[-1] if steps else 0
        if raw.get("workers", 1) > 1:
            shares = [busiest(c) for c in (dig(r, ["idle", "reaperd", "per_worker"]) for r in runs) if c]
            if shares:
                row(f"  busiest worker's share of the {n:,} idle connections (1/n is even)", "share",
                    [None, median(shares), None])
        cpu_r = pick(["idle", "reaperd", "cpu_percent"])
        cpu_h = pick(["idle", "haproxy", "cpu_percent"])
        row(f"idle CPU, {n:,} relayed connections, 1 s sweeps", "% of a core", [None, cpu_r, cpu_h],
            "≤ 2× HAProxy", lambda v, r: r is not None and r <= 2.0, fmt="{:.3f}")
        row("  same, by schedstat (ns clock)", "% of a core",
            [None] + [pick(["idle", k, "cpu_percent_schedstat"]) for k in ("reaperd", "haproxy")],
            fmt="{:.3f}")
        scale = 30000 / n if n else 0
        row("idle CPU extrapolated to 30,000 (linear)", "% of a core",
            [None, cpu_r * scale if cpu_r is not None else None, cpu_h * scale if cpu_h is not None else None],
            "≤ 3 %", lambda v, r: v <= 3.0)
        row(f"  sweep per connection in that window ({n:,} relayed)", "µs",
            [None, pick(["idle", "reaperd", "sweep_us_per_connection"]), None], fmt="{:.3f}")
        row("  sockets whose TCP_INFO the last sweep read", "count",
            [None, pick(["idle", "reaperd", "sockets_read_last_sweep"]), None], fmt="{:.0f}")
        due = pick(["sweep_due", 19000, "us_per_socket_read"])
        if due is not None and n:
            row(f"  idle CPU if all {2 * n:,} sockets were due each sweep (from the worst-case sweep)",
                "% of a core", [None, 100 * due * 2 * n / 1e6, None], "≤ 1 %", lambda v, r: v <= 1.0)
    for key, label, per_what in (("sweep", "idle echo connections, keepalive_idle 60 s", "us_per_connection"),
                                 ("sweep_due", "echo connections all due, keepalive_idle 1 s", "us_per_socket_read")):
        points = sorted({int(n) for r in runs for n in r.get(key, {})})
        if not points:
            continue
        unit = "per connection" if per_what == "us_per_connection" else "per socket read"
        seconds = {}
        for n in points:
            seconds[n] = pick([key, n, "sweep_seconds"])
            row(f"sweep {unit}, {n:,} {label}", "µs", [None, pick([key, n, per_what]), None], "≤ 1 µs",
                lambda v, r: v <= 1.0, "{:.3f}")
            row("  sockets read per sweep", "count", [None, pick([key, n, "sockets_read"]), None], fmt="{:.0f}")
            if key == "sweep":
                row("  sweeps in the window (the sweep sleeps until a connection is due)", "count",
                    [None, pick([key, n, "sweeps"]), None], fmt="{:.0f}")
        if len(points) >= 2:
            n0, n1 = points[0], points[-1]
            at = seconds[n0] + (seconds[n1] - seconds[n0]) / (n1 - n0) * (100000 - n0)
            row(f"  extrapolated to 100,000 (line through {n0:,} and {n1:,})", f"µs {unit}",
                [None, 1e6 * at / 100000, None], "≤ 1 µs", lambda v, r: v <= 1.0, "{:.3f}")
            row("  sweep duration at 100,000 (CPU per 1 s poll)", "ms", [None, 1e3 * at, None], fmt="{:.2f}")
    for n in (5000, 9000):
        floor = pick(["tcpinfo", n, "getsockopt_us"])
        if floor is not None:
            row(f"floor: getsockopt(TCP_INFO) loop in C, {n:,} sockets", "µs per socket", [None, floor, None],
                fmt="{:.3f}")
            row(f"floor: one sock_diag netlink dump, {n:,} sockets", "µs per socket",
                [None, pick(["tcpinfo", n, "netlink_us"]), None], fmt="{:.3f}")
    if any("detection" in r for r in runs):
        for label, fn, across in (("median (median of runs)", statistics.median, median),
                                  ("max (worst of all runs)", max, lambda v: max(v) if v else None)):
            values = []
            for k in ("reaperd", "haproxy"):
                per_run = [fn(r["detection"][k]["seconds"]) for r in runs
                           if "detection" in r and r["detection"][k]["seconds"]]
                values.append(across(per_run))
            row(f"detection {label}, 10 of 20 vanish, ka {DETECT_KA[0]}/{DETECT_KA[1]}/{DETECT_KA[2]}", "s",
                [None, *values], f"≤ {DETECT_DEADLINE} s (SPEC §5)", lambda v, r: v <= DETECT_DEADLINE)
        missed = {k: sum(r["detection"][k]["missed"] for r in runs if "detection" in r) for k in ("reaperd", "haproxy")}
        false = {k: sum(r["detection"][k]["survivors_closed"] for r in runs if "detection" in r)
                 for k in ("reaperd", "haproxy")}
        row("  vanished clients never closed (all runs)", "count", [None, missed["reaperd"], missed["haproxy"]],
            "0", lambda v, r: v == 0, "{:.0f}")
        row("  survivors wrongly closed (all runs)", "count", [None, false["reaperd"], false["haproxy"]],
            "0", lambda v, r: v == 0, "{:.0f}")
        keepalive = sum(r["detection"]["reaperd"].get("reap_reasons", {}).get("keepalive", 0)
                        for r in runs if "detection" in r)
        row("  reaperd reaps logged with reason=keepalive (all runs)", "count", [None, keepalive, None],
            fmt="{:.0f}")
    return rows


def dig(record, path):
    for key in path:
        if not isinstance(record, dict):
            return None
        record = record.get(key, record.get(str(key)))
    return record


def pick_ratio(runs, numerator, denominator, scale):
    """Median over runs of numerator / denominator × scale."""
    values = []
    for record in runs:
        top, bottom = dig(record, numerator), dig(record, denominator)
        values.append(scale * top / bottom if top is not None and bottom else None)
    return median(values)


def ms(us):
    return us / 1000 if us is not None else None


def spread_table(raw):
    """bench/spread.c: the kernel's spread over the threads of one echo server,
    as the busiest thread's share (1/n is even), medians of the runs."""
    runs = [r["spread"] for r in raw["runs"] if "spread" in r]
    if not runs:
        return []
    n = raw.get("workers", 1)
    lines = ["", f"How the kernel spreads clients over {n} threads of one echo server (bench/spread.c; "
             f"the busiest thread's share, {1 / n:.2f} is even):", "",
             "| listening | connection rate, 32 clients (conn/s) | share of the accepts under churn | "
             "share of the CPU under churn | share of 4,000 idle connections |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for mode, label in (("exclusive", "one socket, EPOLLEXCLUSIVE"), ("reuseport", "a socket per thread, SO_REUSEPORT")):
        def pick(path):
            return median([dig(r, [mode, *path]) for r in runs])
        cpu = median([busiest(c) for c in (dig(r, [mode, "churn", "cpu_seconds"]) for r in runs) if c])

        def cell(v, fmt="{:.2f}"):
            return "—" if v is None else fmt.format(v)
        lines.append(f"| {label} | {cell(pick(['rate', 'rate']), '{:.0f}')} | "
                     f"{cell(pick(['churn', 'busiest_share']))} | {cell(cpu)} | {cell(pick(['idle', 'busiest_share']))} |")
    return lines


def render(rows, raw):
    def cell(value, fmt):
        return "—" if value is None else fmt.format(value)

    lines = ["| measure | unit | direct | reaperd | HAProxy | socket-proxyd | reaperd / peer | target | met |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for name, unit, direct, reaperd, haproxy, proxyd, ratio, target, met, fmt in rows:
        verdict = "" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {name} | {unit} | {cell(direct, fmt)} | {cell(reaperd, fmt)} | {cell(haproxy, fmt)} | "
                     f"{cell(proxyd, fmt)} | {cell(ratio, '{:.2f}×')} | {target or ''} | {verdict} |")
    lines += spread_table(raw)
    m = raw.get("machine", {})
    lines.append("")
    workers = raw.get("workers", 1)
    lines.append(f"reaperd `workers = {workers}` against HAProxy `nbthread {workers}`. Median of {len(raw['runs'])} runs. Machine: {m.get('nproc')} × {m.get('cpu')}, "
                 f"Linux {m.get('kernel')}, {m.get('haproxy')}; reaperd at commit {m.get('commit') or '?'} "
                 f"(plus the working tree). Load average (1/5/15 min) "
                 f"at the start {' '.join(raw.get('loadavg_at_start', []))}, at the end "
                 f"{' '.join(m.get('loadavg_at_end', []))}; whole run {raw.get('elapsed_seconds', 0):.0f} s.")
    notes = []
    direct = [r["throughput"]["direct"] for r in raw["runs"] if "throughput" in r]
    if direct:
        busy = median([dig(d, [1, "cpu_seconds"]) / dig(d, [1, "seconds"]) for d in direct])
        notes.append(f"1-stream sender busy {100 * busy:.0f} % of a core")
    rates = [r["rate"]["direct"] for r in raw["runs"] if "rate" in r]
    if rates:
        busy = median([d["cpu_seconds"] / raw.get("rate_seconds", 5) for d in rates])
        notes.append(f"32-client connection loop busy {100 * busy:.0f} % of a core")
    if notes:
        lines.append("Load generator on the direct path (the ceiling): " + "; ".join(notes) + ".")
    if raw.get("pinning"):
        lines.append(f"Proxy pinned to CPU {raw['pinning']['proxy']}, load generator and upstream to CPU "
                     f"{raw['pinning']['load']} (on the direct path the upstream takes the proxy's CPU).")
    return "\n".join(lines)
