#!/usr/bin/env python3
"""The benchmark (scripts/bench.sh runs this after building and starting services).

Measures, in one run and alternating so the machine's noise hits every side alike:
baseline (smallest SwiftNIO HTTP/1.1 server) vs. the gateway's reserve and sold-out paths with
wrk (64 connections, BENCH_ROUNDS rounds of BENCH_SECONDS each, medians), the reserve path under
each Redis persistence setting (no AOF, appendfsync everysec, appendfsync always), a 10,000-unit
flash sale checked against Redis and Postgres, redis-benchmark running the reserve script at
pipeline depth 16, the reconciler draining 200,000 events, and the gateway's peak RSS.

Cost, not only speed: for every wrk round, the CPU time each process involved spent (gateway,
Redis, the baseline server, wrk itself), read from /proc/<pid>/stat (wrk: from its rusage)
before and after, divided by the requests served: microseconds of CPU per request, medians.
"""
import resource
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import urllib.request

import script_cost
from script_cost import basket_keys, cpu_seconds, redis, stream_keys

BIN = os.environ["BIN"]
DATABASE_URL = os.environ["DATABASE_URL"]
REDIS_URL = os.environ["REDIS_URL"]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "64"))
GATEWAY_PORT, BASELINE_PORT, DELAYED_GATEWAY_PORT = 8088, 8090, 8089
# The second gateway's REDIS_BATCH_DELAY_US, for appendfsync always (see the persistence rows).
BATCH_DELAY_US = int(os.environ.get("BENCH_BATCH_DELAY_US", "300"))
ADMIN = "bench-admin"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def psql(sql):
    return subprocess.run(["psql", DATABASE_URL, "-Atqc", sql], capture_output=True, text=True, check=True).stdout.strip()


def http(method, path, body=None, headers=None):
    return http_port(GATEWAY_PORT, method, path, body, headers)


def wait_http(port, path="/healthz"):
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on port {port}")


def to_ms(text):
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def redis_pid():
    return int(re.search(r"process_id:(\d+)", redis("INFO", "server")).group(1))


def medians(results):
    """The medians of a side's rounds: requests/s, p99 ms, CPU µs per request of the measured
    process and of Redis (0 when not measured), and the most non-2xx answers of any round."""
    return (statistics.median(r["rps"] for r in results), statistics.median(r["p99_ms"] for r in results),
            statistics.median(r["cpu_us_per_request"]["process"] for r in results),
            statistics.median(r["cpu_us_per_request"].get("redis", 0) for r in results),
            max(r["non_2xx"] for r in results))


def measured(pids, run):
    """Runs `run` (which returns a result with "requests") and adds the CPU microseconds per
    request of every process in `pids` (name -> pid) and of the load generator."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    children_before = children_cpu_seconds()
    result = run()
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1e6 / max(result["requests"], 1) for name, pid in pids.items()}
    cpu["load_generator"] = (children_cpu_seconds() - children_before) * 1e6 / max(result["requests"], 1)
    result["cpu_us_per_request"] = cpu
    return result


def redis_counters(port):
    """(batches, commands) the gateway on `port` has sent to Redis so far, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    value = lambda name: int(re.search(rf"^{name} (\d+)", text, re.M).group(1))
    return value("gateway_redis_batches_total"), value("gateway_redis_commands_total")


def with_depth(port, run):
    """Runs `run` and adds the pipelining depth of the gateway on `port` over it (commands per
    batch written to Redis)."""
    batches, commands = redis_counters(port)
    result = run()
    batches_after, commands_after = redis_counters(port)
    result["redis_batch_depth"] = (commands_after - commands) / max(batches_after - batches, 1)
    return result


def set_persistence(setting):
    """"no-aof", "everysec" or "always", on the running Redis; waits until a rewrite is done."""
    if setting == "no-aof":
        redis("CONFIG", "SET", "appendonly", "no")
    else:
        redis("CONFIG", "SET", "appendonly", "yes")
        redis("CONFIG", "SET", "appendfsync", setting)
    for _ in range(600):
        info = redis("INFO", "persistence")
        if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
            return
        time.sleep(0.1)


def wrk(port, script=None, args=(), seconds=SECONDS):
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{port}/")
    if script:
        command += ["--", *args]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    for label, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        match = re.search(rf"^\s+{label}\s+(\S+)", output, re.M)
        result[key] = to_ms(match.group(1)) if match else None
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    result["requests"] = int(re.search(r"(\d+) requests in", output).group(1))
    return result


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


def reset_data():
    redis("FLUSHALL")
    psql("TRUNCATE baskets, reservations, payments")


def create_basket(basket, stock, max_per_consumer=1):
    status, body = http("PUT", f"/v1/baskets/{basket}", json.dumps({"stock": stock, "maxPerConsumer": max_per_consumer}),
                        {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
    assert status == 201, (status, body)



def stream_state():
    """Entries held in all 16 streams, and how many of them the group has not acknowledged
    (delivered but pending, plus never delivered)."""
    held = unacknowledged = 0
    for stream in stream_keys():
        held += int(redis("XLEN", stream) or 0)
        info = redis("XINFO", "GROUPS", stream) if redis("EXISTS", stream) == "1" else ""
        fields = info.split("\n")
        for index, field in enumerate(fields[:-1]):
            if field in ("pending", "lag") and fields[index + 1].lstrip("-").isdigit():
                unacknowledged += int(fields[index + 1])
    return held, unacknowledged


def streams_under_load(environment, script, seconds=30):
    """The reserve load for `seconds` with `reconciler run` beside it (trimming every second):
    how large the streams get, against what is not yet acknowledged."""
    log(f"streams under load: reserve for {seconds} s with reconciler run (TRIM_INTERVAL_MS=1000)")
    reset_data()
    create_basket("bench-stream", 10**9)
    reconciler = subprocess.Popen([f"{BIN}/reconciler", "run"], env=dict(environment, TRIM_INTERVAL_MS="1000",
                                  RECONCILER_METRICS_PORT="0"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    load = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{GATEWAY_PORT}/",
                             "--", "bench-stream", "stream"], stdout=subprocess.DEVNULL)
    samples = []
    while load.poll() is None:
        samples.append(stream_state())
        time.sleep(0.5)
    reconciler.terminate()
    reconciler.wait()
    granted = http("GET", "/v1/baskets/bench-stream")[1].get("pending", 0)
    return {
        "seconds": seconds, "reservations": granted,
        "max_stream_entries": max(s[0] for s in samples), "max_unacknowledged": max(s[1] for s in samples),
        "max_acknowledged_not_yet_trimmed": max(s[0] - s[1] for s in samples),
    }


def replication_waits(port):
    """(WAITs answered, of which too few replicas) of the gateway on `port`, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    value = lambda name: int(re.search(rf"^{name} (\d+)", text, re.M).group(1))
    return value("gateway_redis_waits_total"), value("gateway_redis_wait_timeouts_total")


def with_waits(port, run):
    """Runs `run` and adds how many WAITs the gateway on `port` sent over it, per reservation,
    and how many of them counted too few replicas (each failed its batch's changes: 503)."""
    waits, timeouts = replication_waits(port)
    result = run()
    waits_after, timeouts_after = replication_waits(port)
    result["waits_per_request"] = (waits_after - waits) / max(result["requests"], 1)
    result["wait_timeouts"] = timeouts_after - timeouts
    return result


def cluster_beside_single(environment, script, single_gateway_pid):
    """The reserve path on a local Redis Cluster (3 primaries, 3 replicas, AOF everysec) beside
    the single Redis (unless `single_gateway_pid` is None), and on the same cluster through a
    second gateway with REDIS_WAIT_REPLICAS=1, alternating rounds, on baskets spread over all 16
    partitions: requests/s, p50/p99, and the CPU each Redis process and the gateway spent per
    reservation."""
    first_port = int(os.environ.get("BENCH_CLUSTER_PORT", "7100"))
    # the cluster's two gateways: REDIS_WAIT_REPLICAS 0 and 1
    zero_port, one_port = (int(p) for p in os.environ.get("BENCH_CLUSTER_GATEWAY_PORTS", "8089,8092").split(","))
    log(f"cluster: starting a local Redis Cluster (ports {first_port}-{first_port + 5})")
    cluster_env = dict(os.environ, CLUSTER_PORT=str(first_port))
    output = subprocess.run(["scripts/services.sh", "cluster-start"], cwd=ROOT, env=cluster_env, capture_output=True, text=True, check=True)
    cluster_url = re.search(r"REDIS_URL=(\S+)", output.stdout).group(1)
    ports = [first_port + i for i in range(6)]
    pids = {port: int(re.search(r"process_id:(\d+)", subprocess.run(["redis-cli", "-p", str(port), "INFO", "server"],
            capture_output=True, text=True, check=True).stdout).group(1)) for port in ports}
    cluster_gateway = subprocess.Popen([f"{BIN}/gateway"], env=dict(environment, REDIS_URL=cluster_url, GATEWAY_PORT=str(zero_port)))
    wait_gateway = subprocess.Popen([f"{BIN}/gateway"], env=dict(environment, REDIS_URL=cluster_url, GATEWAY_PORT=str(one_port),
                                                                  REDIS_WAIT_REPLICAS="1"))
    try:
        wait_http(zero_port)
        wait_http(one_port)
        # The cluster keeps its data between runs (AOF): start from empty, with every replica in
        # sync (a replica still loading or resyncing acknowledges nothing, and every WAIT would
        # time out).
        cli = lambda port, *args: subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()
        primaries = [port for port in ports if "role:master" in cli(port, "INFO", "replication")]
        # FLUSHALL and WAIT on one connection: WAIT counts acknowledgements of its own
        # connection's writes (on a connection that wrote nothing it returns at once).
        flush_and_wait = lambda port: subprocess.run(["redis-cli", "-p", str(port)], input="FLUSHALL\nWAIT 1 1000\n",
                                                     capture_output=True, text=True).stdout.split()
        for port in primaries:
            for _ in range(600):
                if flush_and_wait(port)[-1:] == ["1"]:
                    break
            else:
                raise SystemExit(f"the replica of :{port} does not acknowledge")
        baskets = []
        index = 0
        # one basket on every partition
        partitions = {}
        while len(partitions) < len(stream_keys()):
            for shape in basket_keys(*(f"spread-{index + i}" for i in range(64))):
                partitions.setdefault(shape["partition"], shape["basket"])
            index += 64
        baskets = [partitions[p] for p in sorted(partitions)]
        for basket in baskets:
            for port in ((GATEWAY_PORT,) if single_gateway_pid else ()) + (zero_port,):
                for _ in range(100):  # a cluster just started may answer 503 for a moment
                    status, body = http_port(port, "PUT", f"/v1/baskets/{basket}", json.dumps({"stock": 10**9, "maxPerConsumer": 1}),
                                             {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"})
                    if status != 503:
                        break
                    time.sleep(0.2)
                assert status in (201, 409), (status, body)
        spread = ",".join(baskets)
        redis_pids = {f"redis_{port}": pid for port, pid in pids.items()}
        cluster_pids = {"gateway": cluster_gateway.pid, **redis_pids}
        wait_pids = {"gateway": wait_gateway.pid, **redis_pids}
        runs = {"single": [], "cluster": [], "cluster_wait1": []} if single_gateway_pid else {"cluster": [], "cluster_wait1": []}
        # The cluster keeps its data between runs (AOF): consumer ids of this run only (every
        # basket allows one unit per consumer, so a reused id would be refused, a cheaper path).
        run_id = f"{int(time.time())}"
        log("cluster: warming up both cluster gateways")
        wrk(zero_port, script, [spread, f"{run_id}-warm-zero"], seconds=2)
        wrk(one_port, script, [spread, f"{run_id}-warm-one"], seconds=2)
        for round_number in range(ROUNDS):
            log(f"cluster round {round_number + 1}/{ROUNDS}: reserve on the single Redis, on the cluster, on the cluster with WAIT 1")
            if single_gateway_pid:
                single_pids = {"gateway": single_gateway_pid, "redis": redis_pid()}
                runs["single"].append(measured(single_pids, lambda: wrk(GATEWAY_PORT, script, [spread, f"{run_id}-cs{round_number}"])))
            # WAIT 0 and WAIT 1 in alternating order, so neither always runs on a warmer cluster
            order = [("cluster", zero_port, cluster_pids, "cc"), ("cluster_wait1", one_port, wait_pids, "cw")]
            for name, port, process_ids, prefix in (order if round_number % 2 == 0 else order[::-1]):
                runs[name].append(measured(process_ids, lambda: with_waits(port, lambda: wrk(port, script, [spread, f"{run_id}-{prefix}{round_number}"]))))
        roles = {}
        for port in ports:
            info = subprocess.run(["redis-cli", "-p", str(port), "INFO", "replication"], capture_output=True, text=True).stdout
            roles[port] = "primary" if "role:master" in info else "replica"
        summary = {}
        for name, rounds in runs.items():
            summary[name] = {
                "rps": statistics.median(r["rps"] for r in rounds),
                # answered 201 per second (wrk counts every answer; a 503 is no reservation)
                "granted_rps": statistics.median(r["rps"] * (r["requests"] - r["non_2xx"]) / max(r["requests"], 1) for r in rounds),
                "p50_ms": statistics.median(r["p50_ms"] for r in rounds),
                "p99_ms": statistics.median(r["p99_ms"] for r in rounds),
                "non_2xx": sum(r["non_2xx"] for r in rounds),
                "waits_per_request": statistics.median(r.get("waits_per_request", 0) for r in rounds),
                "wait_timeouts": sum(r.get("wait_timeouts", 0) for r in rounds),
                "cpu_us_per_reservation": {process: statistics.median(r["cpu_us_per_request"][process] for r in rounds)
                                           for process in rounds[0]["cpu_us_per_request"]},
                "rounds": rounds,
            }
        summary["roles"] = {f"redis_{port}": role for port, role in roles.items()}
        return summary
    finally:
        for process in (cluster_gateway, wait_gateway):
            process.terminate()
            process.wait()
        subprocess.run(["scripts/services.sh", "cluster-stop"], cwd=ROOT, env=cluster_env, capture_output=True)


def http_port(port, method, path, body=None, headers=None):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=body.encode() if body else None, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def machine():
    model = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)}


def main():
    subprocess.run([f"{BIN}/reconciler", "migrate"], check=True, capture_output=True)
    reset_data()
    environment = dict(os.environ, CONSUMER_AUTH="trusted", ADMIN_TOKEN=ADMIN, WEBHOOK_SECRET="bench-secret", ADMISSION_SECRET="bench-admission-secret", GATEWAY_PORT=str(GATEWAY_PORT),
                       LOG_LEVEL="error")
    gateway = subprocess.Popen([f"{BIN}/gateway"], env=environment)
    delayed_gateway = subprocess.Popen([f"{BIN}/gateway"], env=dict(environment, GATEWAY_PORT=str(DELAYED_GATEWAY_PORT),
                                                                     REDIS_BATCH_DELAY_US=str(BATCH_DELAY_US)))
    baseline = subprocess.Popen([f"{BIN}/bench-baseline", str(BASELINE_PORT)], stdout=subprocess.DEVNULL)
    results = {"machine": machine(), "started": datetime.datetime.utcnow().isoformat() + "Z",
               "settings": {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS, "wrk_threads": 2}}
    try:
        wait_http(GATEWAY_PORT)
        wait_http(DELAYED_GATEWAY_PORT)
        wait_http(BASELINE_PORT)
        create_basket("bench-huge", 10**9)
        create_basket("bench-soldout", 0)
        script = os.path.join(ROOT, "bench", "reserve.lua")
        log("warming up")
        wrk(BASELINE_PORT, seconds=2)
        wrk(GATEWAY_PORT, script, ["bench-huge", "warm"], seconds=2)
        rounds = {"baseline": [], "reserve": [], "sold_out": []}
        gateway_and_redis = {"gateway": gateway.pid, "redis": redis_pid()}
        for round_number in range(ROUNDS):
            log(f"round {round_number + 1}/{ROUNDS}: baseline, reserve, sold out ({SECONDS} s each)")
            rounds["baseline"].append(measured({"baseline": baseline.pid}, lambda: wrk(BASELINE_PORT)))
            rounds["reserve"].append(measured(gateway_and_redis, lambda: with_depth(
                GATEWAY_PORT, lambda: wrk(GATEWAY_PORT, script, ["bench-huge", f"r{round_number}"]))))
            rounds["sold_out"].append(measured(gateway_and_redis, lambda: wrk(GATEWAY_PORT, script, ["bench-soldout", f"s{round_number}"])))
        results["rounds"] = rounds
        cpu_median = lambda name, process: statistics.median(r["cpu_us_per_request"][process] for r in rounds[name])
        results["cpu_us_per_request"] = {
            "baseline": {p: cpu_median("baseline", p) for p in ("baseline", "load_generator")},
            "reserve": {p: cpu_median("reserve", p) for p in ("gateway", "redis", "load_generator")},
            "sold_out": {p: cpu_median("sold_out", p) for p in ("gateway", "redis", "load_generator")},
        }

        # The reserve path under each persistence setting, alternating within each round; with
        # `always` also through the second gateway, whose Redis batches wait BATCH_DELAY_US for
        # more calls (fewer batches, so fewer fsyncs per reservation).
        delayed_and_redis = {"gateway": delayed_gateway.pid, "redis": redis_pid()}
        settings = {
            "no-aof": ("no-aof", GATEWAY_PORT, gateway_and_redis),
            "everysec": ("everysec", GATEWAY_PORT, gateway_and_redis),
            "always": ("always", GATEWAY_PORT, gateway_and_redis),
            f"always, batch delay {BATCH_DELAY_US} µs": ("always", DELAYED_GATEWAY_PORT, delayed_and_redis),
        }
        persistence = {name: [] for name in settings}
        for round_number in range(ROUNDS):
            for name, (setting, port, pids) in settings.items():
                log(f"persistence round {round_number + 1}/{ROUNDS}: reserve with {name}")
                set_persistence(setting)
                persistence[name].append(measured(pids, lambda: with_depth(
                    port, lambda: wrk(port, script, ["bench-huge", f"p{round_number}{port}{setting}"]))))
        set_persistence("everysec")
        results["persistence"] = {
            setting: {
                "rps": statistics.median(r["rps"] for r in runs),
                "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                "gateway_cpu_us": statistics.median(r["cpu_us_per_request"]["gateway"] for r in runs),
                "redis_cpu_us": statistics.median(r["cpu_us_per_request"]["redis"] for r in runs),
                "redis_batch_depth": statistics.median(r["redis_batch_depth"] for r in runs),
            }
            for setting, runs in persistence.items()
        }
        delayed_gateway.terminate()
        results["gateway_peak_rss_mb"] = peak_rss_mb(gateway.pid)
        median = lambda name, key: statistics.median(r[key] for r in rounds[name])
        results["baseline_rps"] = median("baseline", "rps")
        results["reserve_rps"] = median("reserve", "rps")
        results["reserve_p50_ms"] = median("reserve", "p50_ms")
        results["reserve_p99_ms"] = median("reserve", "p99_ms")
        results["reserve_non_2xx"] = sum(r["non_2xx"] for r in rounds["reserve"])
        results["sold_out_rps"] = median("sold_out", "rps")
        results["reserve_ratio"] = results["reserve_rps"] / results["baseline_rps"]
        results["sold_out_ratio"] = results["sold_out_rps"] / results["baseline_rps"]
        baseline_cpu = results["cpu_us_per_request"]["baseline"]["baseline"]
        results["reserve_cpu_ratio"] = results["cpu_us_per_request"]["reserve"]["gateway"] / baseline_cpu
        results["sold_out_cpu_ratio"] = results["cpu_us_per_request"]["sold_out"]["gateway"] / baseline_cpu
        results["always_vs_everysec"] = results["persistence"]["always"]["rps"] / results["persistence"]["everysec"]["rps"]
        results["always_delayed_vs_everysec"] = (results["persistence"][f"always, batch delay {BATCH_DELAY_US} µs"]["rps"]
                                                 / results["persistence"]["everysec"]["rps"])
        results["reserve_redis_batch_depth"] = median("reserve", "redis_batch_depth")
        baseline.terminate()

        log("flash sale: 10,000 units")
        reset_data()
        basket = f"flash-{int(time.time())}"
        create_basket(basket, 10_000)
        load = subprocess.Popen(["wrk", "-t2", f"-c{CONNECTIONS}", "-d30s", "-s", script, f"http://127.0.0.1:{GATEWAY_PORT}/",
                                 "--", basket, "flash"], stdout=subprocess.DEVNULL)
        started = time.monotonic()
        sold_out_after = None
        while time.monotonic() - started < 30:
            if http("GET", f"/v1/baskets/{basket}")[1].get("stock") == 0:
                sold_out_after = time.monotonic() - started
                break
            time.sleep(0.005)
        load.terminate()
        load.wait()
        view = http("GET", f"/v1/baskets/{basket}")[1]
        subprocess.run([f"{BIN}/reconciler", "once"], check=True, capture_output=True, env=environment)
        audit = subprocess.run([f"{BIN}/reconciler", "audit"], capture_output=True, env=environment)
        rows = int(psql(f"SELECT count(*) FROM reservations WHERE basket_id = '{basket}'"))
        postgres_stock = int(psql(f"SELECT stock FROM baskets WHERE id = '{basket}'"))
        results["flash_sale"] = {
            "seconds_to_sell_out": sold_out_after, "granted_redis": view.get("pending"), "stock_redis": view.get("stock"),
            "rows_postgres": rows, "stock_postgres": postgres_stock, "audit_exit": audit.returncode,
            "ok": view.get("pending") == 10_000 and rows == 10_000 and postgres_stock == 0 and audit.returncode == 0,
        }

        log("redis-benchmark: the reserve script at pipeline depth 16, rate limit on and off, AOF off")
        reset_data()
        script_runs = script_cost.measure([os.path.join(ROOT, "lua", "reserve.lua")], 300_000, ROUNDS, log)
        results["redis_script_p16"] = next(iter(script_runs.values()))
        results["redis_script_rps_p16"] = results["redis_script_p16"]["rate_limit_on"]["calls_per_second"]
        results["redis_script_cpu_us_per_call_p16"] = results["redis_script_p16"]["rate_limit_on"]["cpu_us_per_call"]
        results["reserve_vs_redis_ratio"] = results["reserve_rps"] / results["redis_script_rps_p16"]
        reset_data()

        log("reconciler: draining 200,000 events")
        reset_data()
        # 200,000 granted reservations written by the script itself (redis-benchmark, rate limit off)
        script_cost.cost_per_call(os.path.join(ROOT, "lua", "reserve.lua"), 200_000, False, redis_pid())
        events = int(redis("XLEN", basket_keys(script_cost.BASKET)[0]["streamKey"]))
        output = subprocess.run([f"{BIN}/reconciler", "once"], check=True, capture_output=True, text=True, env=environment).stdout
        match = re.search(r"applied (\d+) events in ([\d.]+) seconds", output)
        applied, seconds = int(match.group(1)), float(match.group(2))
        results["reconciler"] = {"events_waiting": events, "applied": applied, "seconds": seconds, "events_per_second": applied / seconds}

        results["streams_under_load"] = streams_under_load(environment, script)

        if os.environ.get("BENCH_CLUSTER", "1") != "0":
            results["cluster"] = cluster_beside_single(environment, script, gateway.pid)
    finally:
        for process in (gateway, delayed_gateway, baseline):
            if process.poll() is None:
                process.terminate()
        gateway.wait()

    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results", "latest.json"), "w") as out:
        json.dump(results, out, indent=2)
    m = results["machine"]
    flash = results["flash_sale"]
    cpu = results["cpu_us_per_request"]
    rows = [
        ("baseline (SwiftNIO hello world) req/s", f"{results['baseline_rps']:,.0f}", ""),
        ("reserve reservations/s", f"{results['reserve_rps']:,.0f}", f"ratio {results['reserve_ratio']:.2f} (target >= 0.5)"),
        ("reserve p50 / p99 latency", f"{results['reserve_p50_ms']:.2f} / {results['reserve_p99_ms']:.2f} ms",
         f"p99 target <= 5 ms; {results['reserve_redis_batch_depth']:.1f} calls per Redis batch"),
        ("sold-out requests/s", f"{results['sold_out_rps']:,.0f}", f"ratio {results['sold_out_ratio']:.2f}"),
        ("redis-benchmark reserve script, P16", f"{results['redis_script_rps_p16']:,.0f} calls/s",
         f"Redis CPU per call {results['redis_script_cpu_us_per_call_p16']:.1f} µs with the rate limit on "
         f"(target <= 12), {results['redis_script_p16']['rate_limit_off']['cpu_us_per_call']:.1f} µs off; AOF off"),
        ("CPU per request, baseline", f"{cpu['baseline']['baseline']:.1f} µs", f"wrk {cpu['baseline']['load_generator']:.1f} µs"),
        ("CPU per request, reserve", f"gateway {cpu['reserve']['gateway']:.1f} µs, redis {cpu['reserve']['redis']:.1f} µs",
         f"gateway ÷ baseline {results['reserve_cpu_ratio']:.2f} (target <= 2.0); wrk {cpu['reserve']['load_generator']:.1f} µs"),
        ("CPU per request, sold out", f"gateway {cpu['sold_out']['gateway']:.1f} µs, redis {cpu['sold_out']['redis']:.1f} µs",
         f"gateway ÷ baseline {results['sold_out_cpu_ratio']:.2f} (target <= 1.3); wrk {cpu['sold_out']['load_generator']:.1f} µs"),
    ] + [
        (f"reserve with {setting}", f"{row['rps']:,.0f}/s, p99 {row['p99_ms']:.2f} ms",
         f"gateway {row['gateway_cpu_us']:.1f} µs, redis {row['redis_cpu_us']:.1f} µs per reservation; "
         f"{row['redis_batch_depth']:.1f} calls per Redis batch")
        for setting, row in results["persistence"].items()
    ] + [
        ("reserve/s with always ÷ everysec", f"{results['always_vs_everysec']:.2f}",
         f"with a {BATCH_DELAY_US} µs batch delay {results['always_delayed_vs_everysec']:.2f} (target >= 0.85)"),
    ] + [
        ("flash sale 10,000 units", f"{flash['seconds_to_sell_out'] or float('nan'):.2f} s to sell out",
         f"granted {flash['granted_redis']}, postgres rows {flash['rows_postgres']}, stock {flash['stock_postgres']}, "
         f"audit exit {flash['audit_exit']}: {'OK' if flash['ok'] else 'FAILED'}"),
        ("reconciler drain", f"{results['reconciler']['events_per_second']:,.0f} events/s",
         f"{results['reconciler']['applied']:,} events in {results['reconciler']['seconds']:.2f} s (target >= 50,000/s)"),
        ("gateway peak RSS (reserve load)", f"{results['gateway_peak_rss_mb']:.0f} MB", "target <= 150 MB"),
    ] + cluster_rows(results.get("cluster")) + [
        ("streams under 30 s of reserve load", f"max {results['streams_under_load']['max_stream_entries']:,} entries",
         f"max unacknowledged {results['streams_under_load']['max_unacknowledged']:,}, acknowledged but not yet trimmed "
         f"{results['streams_under_load']['max_acknowledged_not_yet_trimmed']:,} (trim every 1 s), "
         f"{results['streams_under_load']['reservations']:,} reservations"),
    ]
    print(f"\nmachine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
          f"wrk -t2 -c{CONNECTIONS}, {ROUNDS} x {SECONDS} s rounds, medians\n")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>28}  {note}")
    print("\nwritten to bench-results/latest.json")


def cluster_rows(cluster):
    if not cluster:
        return []
    rows = []
    labels = {"single": "single Redis", "cluster": "cluster, WAIT 0", "cluster_wait1": "cluster, REDIS_WAIT_REPLICAS=1"}
    for name in ("single", "cluster", "cluster_wait1"):
        if name not in cluster:
            continue
        run = cluster[name]
        cpu = run["cpu_us_per_reservation"]
        redis_parts = ", ".join(f"{value:.1f}" if process == "redis" else f":{process[6:]} ({cluster['roles'][process]}) {value:.1f}"
                                for process, value in sorted(cpu.items()) if process.startswith("redis"))
        redis_total = sum(value for process, value in cpu.items() if process.startswith("redis"))
        extra = f"; {run.get('non_2xx', 0)} non-2xx"
        if name == "cluster_wait1":
            extra += f"; {run['waits_per_request']:.3f} WAITs per reservation, {run['wait_timeouts']} timed out"
        rate = run.get("granted_rps", run["rps"])
        rows.append((f"reserve over 16 partitions, {labels[name]}", f"{rate:,.0f}/s, p50 {run.get('p50_ms', 0):.2f}, p99 {run['p99_ms']:.2f} ms",
                     f"gateway {cpu['gateway']:.1f} µs; redis µs per reservation {redis_total:.1f}: {redis_parts}{extra}"))
    if "cluster" in cluster and "cluster_wait1" in cluster:
        zero, one = cluster["cluster"], cluster["cluster_wait1"]
        rows.append(("cluster WAIT 1 ÷ WAIT 0", f"{one['granted_rps'] / zero['granted_rps']:.2f} × reservations/s",
                     f"p99 {one['p99_ms'] - zero['p99_ms']:+.2f} ms (target >= 0.8 ×, p99 at most +2 ms)"))
    return rows


def cluster_wait_only():
    """`bench/run.py --cluster-wait`: only the cluster's WAIT 0 against WAIT 1 rows."""
    environment = dict(os.environ, CONSUMER_AUTH="trusted", ADMIN_TOKEN=ADMIN, WEBHOOK_SECRET="bench-secret", ADMISSION_SECRET="bench-admission-secret", LOG_LEVEL="error")
    script = os.path.join(ROOT, "bench", "reserve.lua")
    cluster = cluster_beside_single(environment, script, None)
    os.makedirs(os.path.join(ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench-results", "cluster-wait.json"), "w") as out:
        json.dump({"machine": machine(), "settings": {"rounds": ROUNDS, "seconds": SECONDS, "connections": CONNECTIONS},
                   "cluster": cluster}, out, indent=2)
    rows = cluster_rows(cluster)
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>40}  {note}")
    print("\nwritten to bench-results/cluster-wait.json")


if __name__ == "__main__":
    if sys.argv[1:] == ["--cluster-wait"]:
        cluster_wait_only()
    else:
        main()
