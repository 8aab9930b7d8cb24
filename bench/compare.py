#!/usr/bin/env python3
"""Two builds of the gateway side by side, in one run, alternating round by round.

usage: BIN=.build/release REDIS_PORT=6390 REDIS_URL=redis://127.0.0.1:6390 DATABASE_URL=... \
       bench/compare.py <old bin dir> <new bin dir> [rounds] [seconds]

Both gateways run at once on the same Redis (each loads its own scripts) beside the baseline
server; each round runs wrk (-t2 -c64) against the baseline, then the reserve and the sold-out
path of the old and the new gateway in turn. CPU per request of each process from
/proc/<pid>/stat, medians over rounds. This is how the README's before/after figures are made:
a machine that drifts between two separate runs hits both builds alike here.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the benchmark's helpers: wrk, cpu time, baskets)

OLD_PORT, NEW_PORT = 8091, 8088


def main():
    old_bin, new_bin = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    seconds = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    bench.redis("FLUSHALL")
    environment = dict(os.environ, CONSUMER_AUTH="trusted", ADMIN_TOKEN=bench.ADMIN, WEBHOOK_SECRET="bench-secret", ADMISSION_SECRET="bench-admission-secret", LOG_LEVEL="error")
    gateways = {
        "old": subprocess.Popen([f"{old_bin}/gateway"], env=dict(environment, GATEWAY_PORT=str(OLD_PORT))),
        "new": subprocess.Popen([f"{new_bin}/gateway"], env=dict(environment, GATEWAY_PORT=str(NEW_PORT))),
    }
    ports = {"old": OLD_PORT, "new": NEW_PORT}
    baseline = subprocess.Popen([f"{new_bin}/bench-baseline", str(bench.BASELINE_PORT)], stdout=subprocess.DEVNULL)
    script = os.path.join(bench.ROOT, "bench", "reserve.lua")
    paths = (("reserve", "compare-huge", []), ("sold out", "compare-soldout", []),
             ("sold out, key", "compare-soldout", ["keyed"]))
    runs = {"baseline": []}
    for path, _, _ in paths:
        runs.update({f"old {path}": [], f"new {path}": []})
    try:
        for port in ports.values():
            bench.wait_http(port)
        bench.wait_http(bench.BASELINE_PORT)
        bench.create_basket("compare-huge", 10**9)  # through the new gateway (port 8088)
        bench.create_basket("compare-soldout", 0)
        redis_pid = bench.redis_pid()
        for name in ports:
            bench.wrk(ports[name], script, ["compare-huge", f"warm{name}"], seconds=2)
        for round_number in range(rounds):
            bench.log(f"compare round {round_number + 1}/{rounds}")
            runs["baseline"].append(bench.measured({"process": baseline.pid},
                                                   lambda: bench.wrk(bench.BASELINE_PORT, seconds=seconds)))
            for path, basket, extra in paths:
                for name in ("old", "new"):
                    pids = {"process": gateways[name].pid, "redis": redis_pid}
                    prefix = f"{name}{path[0]}{len(extra)}{round_number}"
                    runs[f"{name} {path}"].append(bench.measured(pids, lambda: bench.wrk(
                        ports[name], script, [basket, prefix, *extra], seconds=seconds)))
    finally:
        for process in (*gateways.values(), baseline):
            process.terminate()
    print(f"\n{rounds} alternating rounds of {seconds} s, wrk -t2 -c64, medians\n")
    print(f"{'':<19} {'requests/s':>11} {'p99 ms':>8} {'CPU/request':>12} {'÷ baseline':>11} {'Redis CPU':>10}")
    base_cpu = bench.medians(runs["baseline"])[2]
    for name, results in runs.items():
        rps, p99, cpu, redis_cpu, _ = bench.medians(results)
        print(f"{name:<19} {rps:>11,.0f} {p99:>8.2f} {cpu:>9.1f} µs {cpu / base_cpu:>11.2f} {redis_cpu:>7.1f} µs")


if __name__ == "__main__":
    main()
