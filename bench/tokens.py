#!/usr/bin/env python3
"""Gateway CPU per reservation with consumer tokens (HS256, ES256) against trusted mode, side by side.

usage: BIN=.build/release REDIS_PORT=6396 REDIS_URL=redis://127.0.0.1:6396 DATABASE_URL=... \
       bench/tokens.py [rounds] [seconds]

Three gateways of one build on one Redis (CONSUMER_AUTH=trusted, HS256 keys, an ES256 JWKS) and
the baseline server; each round runs wrk -t2 -c64 against each in turn, every request with a token
not used before (a new consumer: the verification is never a cache hit), then again with 2,048
tokens each used many times (ES256: cache hits; HS256 tokens are verified every time). CPU per request of each gateway from /proc, medians over
rounds.
"""
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402

PORTS = {"trusted": 8111, "HS256": 8112, "ES256": 8113}


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    binary = os.environ["BIN"]
    work = tempfile.mkdtemp(prefix="bench-tokens-")
    # Enough for every round's first-use run to never reach the next round's tokens (a token
    # used twice on the first-use basket answers 409: one unit per consumer there): wrk's two
    # threads take every other line, so a round spans twice the faster thread's requests
    # (40,000 a second between them for `seconds`, with room for one thread running ahead).
    span = max(150_000, 60_000 * seconds)
    count = span * rounds
    hs_file, es_file = os.path.join(work, "hs256"), os.path.join(work, "es256")
    bench.log(f"minting {count:,} HS256 and {count:,} ES256 tokens")
    hs_keys = subprocess.run([f"{binary}/bench-scripts", "tokens", "hs256", str(count), hs_file], check=True,
                             capture_output=True, text=True).stdout.strip()
    subprocess.run([f"{binary}/bench-scripts", "tokens", "es256", str(count), es_file], check=True)
    bench.redis("FLUSHALL")
    base = dict(os.environ, ADMIN_TOKEN=bench.ADMIN, WEBHOOK_SECRET="bench-secret", ADMISSION_SECRET="bench-admission-secret", LOG_LEVEL="error", RESERVE_RATE_LIMIT="0")
    environments = {
        "trusted": dict(base, CONSUMER_AUTH="trusted"),
        "HS256": dict(base, CONSUMER_AUTH="token", CONSUMER_TOKEN_KEYS=hs_keys),
        "ES256": dict(base, CONSUMER_AUTH="token", CONSUMER_TOKEN_JWKS=es_file + ".jwks"),
    }
    gateways = {name: subprocess.Popen([f"{binary}/gateway"], env=dict(environments[name], GATEWAY_PORT=str(port)))
                for name, port in PORTS.items()}
    baseline = subprocess.Popen([f"{binary}/bench-baseline", str(bench.BASELINE_PORT)], stdout=subprocess.DEVNULL)
    script = os.path.join(bench.ROOT, "bench", "reserve_token.lua")
    files = {"trusted": "", "HS256": hs_file, "ES256": es_file}
    # The second shape: 2,048 consumers, each token used again and again (a consumer's retries,
    # polls and reads in a sale): after its first use every ES256 verification is a cache hit
    # (HS256 tokens are never cached).
    reused = {"trusted": ""}
    for name, path in (("HS256", hs_file), ("ES256", es_file)):
        reused[name] = path + ".reused"
        with open(path) as source, open(reused[name], "w") as target:
            for _ in range(2048):
                target.write(source.readline())
    runs = {name: [] for name in ["baseline", *PORTS]}
    reuse_runs = {name: [] for name in PORTS}
    try:
        for port in PORTS.values():
            bench.wait_http(port)
        bench.wait_http(bench.BASELINE_PORT)
        for basket, body in (("tokens-huge", '{"stock": 1000000000}'),
                             ("tokens-reused", '{"stock": 1000000000, "maxPerConsumer": 1000000000}')):
            bench.http_port(PORTS["trusted"], "PUT", f"/v1/baskets/{basket}", body,
                            {"Authorization": f"Bearer {bench.ADMIN}", "Content-Type": "application/json"})
        first = 0
        for round_number in range(rounds):
            bench.log(f"tokens round {round_number + 1}/{rounds}")
            runs["baseline"].append(bench.measured({"process": baseline.pid}, lambda: bench.wrk(bench.BASELINE_PORT, seconds=seconds)))
            for name in PORTS:
                result = bench.measured({"process": gateways[name].pid, "redis": bench.redis_pid()}, lambda: bench.wrk(
                    PORTS[name], script, ["tokens-huge", files[name], str(first), str(span)], seconds=seconds))
                runs[name].append(result)
                reuse_runs[name].append(bench.measured({"process": gateways[name].pid, "redis": bench.redis_pid()}, lambda: bench.wrk(
                    PORTS[name], script, ["tokens-reused", reused[name], "0"], seconds=seconds)))
            # the next round starts past every token this one could have used (no reuse, no cache hit)
            first += span
    finally:
        for process in (*gateways.values(), baseline):
            process.terminate()
    print(f"\n{rounds} alternating rounds of {seconds} s, wrk -t2 -c64, a token never used before per request, medians\n")
    print(f"{'':<10} {'requests/s':>11} {'p99 ms':>8} {'gateway CPU/request':>20} {'÷ trusted':>10} {'non-2xx':>8}  per-round ÷ trusted")
    print_table(runs)
    print("\nthe same rounds, 2,048 consumers each reusing one token (ES256: cache hits after the first use)\n")
    print_table(reuse_runs)


def print_table(runs):
    """A row per side: medians, gateway CPU per request ÷ trusted's (none for the baseline), and
    the median and range of the per-round ratios (each round's runs are minutes apart at most,
    so they share the machine's state better than the medians of whole sides do)."""
    trusted_cpu = bench.medians(runs["trusted"])[2]
    for name, results in runs.items():
        rps, p99, cpu, _, errors = bench.medians(results)
        ratio = "" if name == "baseline" else f"{cpu / trusted_cpu:.2f}"
        per_round = ""
        if name not in ("baseline", "trusted"):
            ratios = sorted(r["cpu_us_per_request"]["process"] / t["cpu_us_per_request"]["process"]
                            for r, t in zip(results, runs["trusted"]))
            per_round = f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f})"
        print(f"{name:<10} {rps:>11,.0f} {p99:>8.2f} {cpu:>17.1f} µs {ratio:>10} {errors:>8}  {per_round}")

if __name__ == "__main__":
    main()
