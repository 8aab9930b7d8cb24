#!/usr/bin/env python3
"""Two builds of the gateway side by side, in one run, alternating round by round.

usage: BIN=.build/release REDIS_PORT=6390 REDIS_URL=redis://127.0.0.1:6390 DATABASE_URL=... \
       bench/compare.py <old bin dir> <new bin dir> [rounds] [seconds]

Both gateways run at once on the same Redis (each loads its own scripts) beside the baseline
server, with the production defaults (rate limit on: RESERVE_RATE_LIMIT 20). Each round runs
wrk (-t2 -c64) against the baseline, then each shape through the old and the new gateway in
turn:

- flash sale: one basket of 10^9 units, a new consumer per request (every request a grant);
- many baskets: 64 baskets, requests round robin over them (64 in flight, each for its own
  basket: nothing to coalesce);
- sold out: a basket of stock 0;
- flash sale, always: the flash sale with Redis's `appendfsync always` (the others run with
  `everysec`).

For every run: requests/s, p99, CPU per request of the gateway and of Redis from
/proc/<pid>/stat (Redis's per granted reservation where everything is granted), Redis calls
per batch the gateway wrote (its gateway_redis_* counters) and reservations per reserve script
call (gateway_reserve_* counters; a build without them sends one call per reservation), and
the time Redis counted inside EVALSHA per request (INFO commandstats: the scripts' own run time,
apart from reading, parsing and answering commands and writing the AOF).
COMPARE_SHAPES (comma-separated shape names) runs only those shapes.
Medians over rounds. A machine that drifts between two separate runs hits both builds alike
here; which build goes first alternates by round. Each run starts from an empty Redis with a
fresh AOF (the same data size for both builds), and automatic AOF rewrites are off for the run
(a rewrite is a fork of Redis: noise that would land on whichever run it falls in).
Writes bench-results/compare.json.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the benchmark's helpers: wrk, cpu time, baskets)

OLD_PORT, NEW_PORT = 8091, 8088
MANY = [f"compare-many-{index}" for index in range(64)]


def counters(port):
    """The gateway's Redis batches and commands, and its reserve calls and the requests they
    decided (None for a build that does not coalesce)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    def value(name):
        match = re.search(rf"^{name} (\d+)", text, re.M)
        return int(match.group(1)) if match else None

    return (value("gateway_redis_batches_total"), value("gateway_redis_commands_total"), value("gateway_reserve_calls_total"),
            value("gateway_reserve_call_requests_total"))


def script_time():
    """(calls, µs) Redis counted inside EVALSHA since the last CONFIG RESETSTAT: the scripts' own
    run time, without reading, parsing and answering the commands or writing the AOF."""
    text = bench.redis("INFO", "commandstats")
    match = re.search(r"^cmdstat_evalsha:calls=(\d+),usec=(\d+)", text, re.M)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def with_counters(port, run):
    before = counters(port)
    bench.redis("CONFIG", "RESETSTAT")
    result = run()
    after = counters(port)
    _, script_us = script_time()
    result["redis_script_us_per_request"] = script_us / max(result["requests"], 1)
    result["redis_batch_depth"] = (after[1] - before[1]) / max(after[0] - before[0], 1)
    if after[2] is None:
        result["reservations_per_call"] = 1.0
    else:
        result["reservations_per_call"] = (after[3] - before[3]) / max(after[2] - before[2], 1)
    return result


def fresh_redis():
    """An empty Redis with a rewritten (empty) AOF, and the compared baskets made again."""
    bench.redis("FLUSHALL")
    bench.redis("BGREWRITEAOF")
    bench.set_persistence("everysec")  # waits until the rewrite is done
    bench.create_basket("compare-huge", 10**9)  # through the new gateway (port 8088)
    bench.create_basket("compare-soldout", 0)
    for basket in MANY:
        bench.create_basket(basket, 10**9)


def main():
    old_bin, new_bin = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    rewrite_percentage = "100"
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    bench.redis("FLUSHALL")
    bench.set_persistence("everysec")
    environment = dict(os.environ, CONSUMER_AUTH="trusted", ADMIN_TOKEN=bench.ADMIN, WEBHOOK_SECRET="bench-secret",
                       ADMISSION_SECRET="bench-admission-secret", LOG_LEVEL="error")
    environment.pop("RESERVE_RATE_LIMIT", None)
    gateways = {
        "old": subprocess.Popen([f"{old_bin}/gateway"], env=dict(environment, GATEWAY_PORT=str(OLD_PORT))),
        "new": subprocess.Popen([f"{new_bin}/gateway"], env=dict(environment, GATEWAY_PORT=str(NEW_PORT))),
    }
    ports = {"old": OLD_PORT, "new": NEW_PORT}
    baseline = subprocess.Popen([f"{new_bin}/bench-baseline", str(bench.BASELINE_PORT)], stdout=subprocess.DEVNULL)
    script = os.path.join(bench.ROOT, "bench", "reserve.lua")
    # (name, baskets, appendfsync)
    shapes = (("flash sale", "compare-huge", "everysec"), ("many baskets", ",".join(MANY), "everysec"),
              ("sold out", "compare-soldout", "everysec"), ("flash sale, always", "compare-huge", "always"))
    # COMPARE_SHAPES="flash sale,many baskets" runs only those (for a quicker look)
    if os.environ.get("COMPARE_SHAPES"):
        wanted = os.environ["COMPARE_SHAPES"].split(",")
        shapes = tuple(shape for shape in shapes if shape[0] in wanted)
    runs = {"baseline": []}
    for shape, _, _ in shapes:
        runs.update({f"old {shape}": [], f"new {shape}": []})
    try:
        for port in ports.values():
            bench.wait_http(port)
        bench.wait_http(bench.BASELINE_PORT)
        redis_pid = bench.redis_pid()
        rewrite_percentage = bench.redis("CONFIG", "GET", "auto-aof-rewrite-percentage").split()[-1]
        # No AOF rewrite (a fork of a growing Redis) inside a measured run: each round starts
        # from an empty Redis with a fresh AOF, so every run sees the same data size.
        bench.redis("CONFIG", "SET", "auto-aof-rewrite-percentage", "0")
        fresh_redis()
        for name in ports:
            bench.wrk(ports[name], script, ["compare-huge", f"warm{name}"], seconds=2)
        for round_number in range(rounds):
            bench.log(f"compare round {round_number + 1}/{rounds}")
            fresh_redis()
            runs["baseline"].append(bench.measured({"process": baseline.pid},
                                                   lambda: bench.wrk(bench.BASELINE_PORT, seconds=seconds)))
            for shape, baskets, persistence in shapes:
                # Which build goes first alternates by round, and each run starts from an empty
                # Redis: the one measured second would otherwise meet a Redis holding the first
                # one's reservations (a bigger keyspace and holds set, memory touched for the
                # first time: Redis CPU that is not the build's).
                for name in (("old", "new") if round_number % 2 == 0 else ("new", "old")):
                    fresh_redis()
                    bench.set_persistence(persistence)
                    pids = {"process": gateways[name].pid, "redis": redis_pid}
                    prefix = f"{name}{shape[:2]}{len(persistence)}{round_number}"
                    runs[f"{name} {shape}"].append(bench.measured(pids, lambda: with_counters(ports[name], lambda: bench.wrk(
                        ports[name], script, [baskets, prefix], seconds=seconds))))
            bench.set_persistence("everysec")
    finally:
        bench.set_persistence("everysec")
        bench.redis("CONFIG", "SET", "auto-aof-rewrite-percentage", rewrite_percentage)
        for process in (*gateways.values(), baseline):
            process.terminate()

    def median(name, key):
        return statistics.median(key(r) for r in runs[name])

    base_rps = median("baseline", lambda r: r["rps"])
    base_cpu = median("baseline", lambda r: r["cpu_us_per_request"]["process"])
    table = {}
    for name in runs:
        row = {
            "rps": median(name, lambda r: r["rps"]), "p99_ms": median(name, lambda r: r["p99_ms"]),
            "gateway_cpu_us": median(name, lambda r: r["cpu_us_per_request"]["process"]),
        }
        if name != "baseline":
            # Redis CPU per granted reservation: what Redis spent over the answers that were grants
            # (every answer of the flash-sale and many-baskets shapes; none of sold out's)
            row["redis_cpu_us"] = median(name, lambda r: r["cpu_us_per_request"]["redis"])
            row["redis_cpu_us_per_grant"] = median(
                name, lambda r: r["cpu_us_per_request"]["redis"] * r["requests"] / max(r["requests"] - r["non_2xx"], 1))
            row["redis_script_us"] = median(name, lambda r: r.get("redis_script_us_per_request", 0))
            row["redis_batch_depth"] = median(name, lambda r: r["redis_batch_depth"])
            row["reservations_per_call"] = median(name, lambda r: r["reservations_per_call"])
            row["non_2xx"] = max(r["non_2xx"] for r in runs[name])
        table[name] = row
    os.makedirs(os.path.join(bench.ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(bench.ROOT, "bench-results", "compare.json"), "w") as out:
        json.dump({"rounds": rounds, "seconds": seconds, "table": table, "runs": runs}, out, indent=2)

    print(f"\n{rounds} alternating rounds of {seconds} s, wrk -t2 -c64, medians; CPU per request from /proc\n")
    print(f"{'':<25} {'req/s':>8} {'÷ base':>7} {'p99 ms':>7} {'gateway CPU':>12} {'÷ base':>7} {'Redis CPU':>10} "
          f"{'in script':>10} {'calls/batch':>12} {'res/call':>9}")
    for name, row in table.items():
        if name == "baseline":
            print(f"{name:<25} {row['rps']:>8,.0f} {1:>7.2f} {row['p99_ms']:>7.2f} {row['gateway_cpu_us']:>9.1f} µs {1:>7.2f}")
            continue
        redis_cpu = row["redis_cpu_us"] if "sold out" in name else row["redis_cpu_us_per_grant"]
        print(f"{name:<25} {row['rps']:>8,.0f} {row['rps'] / base_rps:>7.2f} {row['p99_ms']:>7.2f} "
              f"{row['gateway_cpu_us']:>9.1f} µs {row['gateway_cpu_us'] / base_cpu:>7.2f} {redis_cpu:>7.1f} µs "
              f"{row['redis_script_us']:>7.1f} µs {row['redis_batch_depth']:>12.1f} {row['reservations_per_call']:>9.1f}")
    for name in ("old", "new") if any(shape[0] == "flash sale, always" for shape in shapes) else ():
        always = table[f"{name} flash sale, always"]["rps"] / table[f"{name} flash sale"]["rps"]
        print(f"{name}: flash sale, always ÷ everysec {always:.2f}")
    for shape in (shape for shape, _, _ in shapes if shape != "flash sale, always"):
        old, new = table[f"old {shape}"], table[f"new {shape}"]
        print(f"{shape}: new ÷ old requests/s {new['rps'] / old['rps']:.2f}, gateway CPU {new['gateway_cpu_us'] / old['gateway_cpu_us']:.2f}, "
              f"Redis CPU {new['redis_cpu_us'] / max(old['redis_cpu_us'], 1e-9):.2f}")
        # The same ratios taken within each round (the two runs minutes apart at most) and then
        # their median: on a host whose speed swings between minutes, steadier than the ratio of
        # medians above.
        pairs = list(zip(runs[f"old {shape}"], runs[f"new {shape}"]))

        def paired(key):
            return statistics.median(key(n) / max(key(o), 1e-9) for o, n in pairs)

        print(f"{shape}: per-round ratios, medians: requests/s {paired(lambda r: r['rps']):.2f}, "
              f"gateway CPU {paired(lambda r: r['cpu_us_per_request']['process']):.2f}, "
              f"Redis CPU {paired(lambda r: r['cpu_us_per_request']['redis']):.2f}, "
              f"in script {paired(lambda r: r.get('redis_script_us_per_request', 0)):.2f}")
    print("\nwritten to bench-results/compare.json")


if __name__ == "__main__":
    main()
