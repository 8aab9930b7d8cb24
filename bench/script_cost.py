#!/usr/bin/env python3
"""Redis CPU per call of reserve scripts, side by side (issue 13's harness).

usage: REDIS_PORT=6390 bench/script_cost.py [--calls N] [--rounds R] [--batch B] [--aof everysec] script.lua [...]
       REDIS_PORT=6390 bench/script_cost.py --breakdown [--batch B]   (lua/reserve.lua, one piece out at a time)
       REDIS_PORT=6390 bench/script_cost.py --batches 1,4,16,64 [--aof everysec]   (per batch size: lua/reserve.lua,
           and lua/reserve_one.lua for calls of one, as the gateway sends them)

--batch B: every call decides B reservations (as the gateway's coalesced calls do); the figures
are then per reservation (the call's cost divided by B).

For each round and each script, alternating: FLUSHALL, a basket seeded as the gateway leaves it,
then `redis-benchmark -P 16 -c 50` running the script with the gateway's key shape (a fresh
consumer and reservation id per call, rate limit on and off), and the Redis process's CPU time
from /proc/<pid>/stat divided by the calls: microseconds of Redis CPU per call, medians. AOF is
switched off for the measurement (the figure is the script's cost, not the disk's) and restored,
unless --aof everysec asks for it on (then the figure includes writing the AOF).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

REDIS_PORT = os.environ.get("REDIS_PORT", "6390")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BASKET = "bench-rb"
# reservations per script call (--batch)
BATCH = [1]


def redis(*args):
    return subprocess.run(["redis-cli", "-p", REDIS_PORT, *map(str, args)], capture_output=True, text=True,
                          check=True).stdout.strip()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


_TOOL = []


def tool(*args):
    """bench-scripts (Sources/BenchScripts): the project's own call types build every key, argument
    and script source sent here, so nothing is copied into Python. Found once: in BIN when it has
    it, else built here (release)."""
    if not _TOOL:
        binary = os.path.join(os.environ.get("BIN", ""), "bench-scripts")
        if not os.environ.get("BIN") or not os.path.exists(binary):
            subprocess.run(["swift", "build", "-c", "release", "--product", "bench-scripts"], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
            path = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout.strip()
            binary = os.path.join(path, "bench-scripts")
        _TOOL.append(binary)
    return subprocess.run([_TOOL[0], *map(str, args)], capture_output=True, text=True, check=True).stdout


def basket_keys(*baskets):
    """[{basket, partition, basketKey, streamKey}] as the gateway names them."""
    return json.loads(tool("keys", *baskets))


def stream_keys():
    return json.loads(tool("streams"))


def reserve_command(sha, rate_limit):
    """EVALSHA with the keys and arguments `ReserveCall` sends; `__rand_int__` makes every call a
    new consumer and a new reservation id (redis-benchmark draws each occurrence apart), and ids
    are in the gateway's shape (the partition first), so the reconciler can drain what this writes."""
    shape = json.loads(tool("reserve", BASKET, 20 if rate_limit else 0, BATCH[0]))
    return ["EVALSHA", sha, str(len(shape["keys"])), *shape["keys"], *shape["arguments"]]


def seed_basket():
    """The bench basket, made by basket_create.lua as the gateway makes one."""
    create = json.loads(tool("create", BASKET, 10**9))
    redis("EVAL", tool("source", "basket_create"), len(create["keys"]), *create["keys"], *create["arguments"])


def cost_per_call(path, calls, rate_limit, pid):
    redis("FLUSHALL")
    seed_basket()
    # the script as Redis runs it: the prelude, then the file
    sha = redis("SCRIPT", "LOAD", tool("join", path))
    if not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise SystemExit(f"{path}: {sha}")
    command = ["redis-benchmark", "-p", REDIS_PORT, "-c", "50", "-n", str(calls), "-r", "1000000000", "-P", "16",
               "-q", *reserve_command(sha, rate_limit)]
    before = cpu_seconds(pid)
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(pid) - before
    granted = int(redis("HGET", basket_keys(BASKET)[0]["basketKey"], "pending") or 0)
    rps = float(re.findall(r"([\d.]+) requests per second", output)[-1])
    return {"cpu_us": used * 1e6 / (calls * BATCH[0]), "rps": rps * BATCH[0], "granted": granted}


def measure(scripts, calls, rounds, log=lambda message: None, aof="no"):
    """{script: {"rate_limit_on": {...}, "rate_limit_off": {...}}} with medians over rounds:
    Redis CPU per reservation and reservations per second."""
    pid = int(re.search(r"process_id:(\d+)", redis("INFO", "server")).group(1))
    appendonly = redis("CONFIG", "GET", "appendonly").split()[-1]
    appendfsync = redis("CONFIG", "GET", "appendfsync").split()[-1]
    if aof == "no":
        redis("CONFIG", "SET", "appendonly", "no")
    else:
        redis("CONFIG", "SET", "appendonly", "yes")
        redis("CONFIG", "SET", "appendfsync", aof)
    runs = {script: {"rate_limit_on": [], "rate_limit_off": []} for script in scripts}
    try:
        for round_number in range(rounds):
            for script in scripts:
                for mode in ("rate_limit_on", "rate_limit_off"):
                    log(f"round {round_number + 1}/{rounds}: {os.path.basename(script)} {mode}")
                    runs[script][mode].append(cost_per_call(script, calls, mode == "rate_limit_on", pid))
    finally:
        redis("FLUSHALL")
        redis("CONFIG", "SET", "appendonly", appendonly)
        redis("CONFIG", "SET", "appendfsync", appendfsync)
    return {
        script: {
            mode: {"cpu_us_per_call": statistics.median(r["cpu_us"] for r in results),
                   "calls_per_second": statistics.median(r["rps"] for r in results),
                   "granted": min(r["granted"] for r in results)}
            for mode, results in modes.items()
        }
        for script, modes in runs.items()
    }


# What each piece of lua/reserve.lua costs: the script with one piece taken out (a line it
# contains replaced), measured beside the whole script. Not products, only measurements.
BREAKDOWN = {
    "without the reservation hash": ("    if failed(redis.pcall('HSET', reservationKey", "    if failed(noop('HSET', reservationKey"),
    "without the holds (ZADD)": ("  redis.call('ZADD', KEYS[3]", "  noop('ZADD', KEYS[3]"),
    "without the stream event (XADD)": ("    redis.call('XADD', KEYS[4]", "    noop('XADD', KEYS[4]"),
    "without the basket update (HSET)": ("  redis.call('HSET', KEYS[1], 'stock'", "  noop('HSET', KEYS[1], 'stock'"),
    "without the consumer's count (HINCRBY)": ("    local held = redis.call('HINCRBY', KEYS[2], consumer, quantityText)",
                                               "    local held = quantity"),
    "without the rate-limit window (SET NX GET)": ("    local counted = redis.call('SET', rateKey, '1', 'PX', '1000', 'NX', 'GET')",
                                                   "    local counted = false"),
    "without Redis TIME": ("  if not now then now = nowMs() end", "  if not now then now = 1700000000000 end"),
}
MINIMAL = """-- the floor: per reservation one counter and one stream entry, same keys and arguments
local replies = {}
for r = 1, (#ARGV - 4) / 6 do
  local left = redis.call('HINCRBY', KEYS[1], 'stock', -1)
  redis.call('XADD', KEYS[4], '*', 'res', ARGV[7 + 6 * (r - 1)], 'stock', left)
  replies[r] = {'granted', ARGV[7 + 6 * (r - 1)], 0, left}
end
return replies
"""


def breakdown_scripts(source_path, directory):
    """The variants of BREAKDOWN plus the minimal script, written to `directory`."""
    source = open(source_path).read()
    paths = {"whole script": source_path}
    for index, (name, (line, replacement)) in enumerate(BREAKDOWN.items()):
        if line not in source:
            print(f"script-cost: '{line.strip()}' is not in {source_path}; '{name}' skipped", file=sys.stderr)
            continue
        path = os.path.join(directory, f"variant-{index}.lua")
        with open(path, "w") as out:
            # the arguments are still computed; only the Redis call is left out
            out.write("local function noop() end\n" + source.replace(line, replacement, 1))
        paths[name] = path
    paths["minimal (HINCRBY + XADD)"] = os.path.join(directory, "minimal.lua")
    with open(paths["minimal (HINCRBY + XADD)"], "w") as out:
        out.write(MINIMAL)
    return paths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--breakdown", action="store_true",
                        help="measure lua/reserve.lua with each piece taken out in turn, and a minimal script")
    parser.add_argument("--batch", type=int, default=1, help="reservations per call (1 to 64)")
    parser.add_argument("--batches", help="lua/reserve.lua at each of these batch sizes, e.g. 1,4,16,64")
    parser.add_argument("--aof", default="no", choices=["no", "everysec"], help="AOF during the measurement")
    parser.add_argument("scripts", nargs="*")
    options = parser.parse_args()
    log = lambda message: print(f"script-cost: {message}", file=sys.stderr, flush=True)
    BATCH[0] = options.batch
    if options.batches:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        print(f"{'reservations per call':<24} {'rate limit on':>14} {'off':>10} {'reservations/s (on)':>20}   "
              f"Redis CPU per reservation, medians, AOF {options.aof}")
        for batch in (int(text) for text in options.batches.split(",")):
            BATCH[0] = batch
            # fewer calls for larger batches: about the same number of reservations each time
            calls = max(options.calls // batch, 2_000)
            # a call of one is what the gateway sends to reserve_one.lua (the straight script)
            script = "reserve_one.lua" if batch == 1 else "reserve.lua"
            result = measure([os.path.join(root, "lua", script)], calls, options.rounds, log, options.aof)
            modes = next(iter(result.values()))
            print(f"{batch:<24} {modes['rate_limit_on']['cpu_us_per_call']:>11.1f} µs {modes['rate_limit_off']['cpu_us_per_call']:>7.1f} µs "
                  f"{modes['rate_limit_on']['calls_per_second']:>20,.0f}")
        return
    if options.breakdown:
        import tempfile
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with tempfile.TemporaryDirectory() as directory:
            named = breakdown_scripts(os.path.join(root, "lua", "reserve.lua"), directory)
            results = measure(list(named.values()), max(options.calls // options.batch, 2_000), options.rounds, log, options.aof)
            whole = results[named["whole script"]]["rate_limit_on"]["cpu_us_per_call"]
            print(f"{'lua/reserve.lua':<42} {'rate limit on':>14} {'off':>10} {'saved (on)':>11}   Redis CPU per call, medians")
            for name, path in named.items():
                on = results[path]["rate_limit_on"]["cpu_us_per_call"]
                off = results[path]["rate_limit_off"]["cpu_us_per_call"]
                print(f"{name:<42} {on:>11.1f} µs {off:>7.1f} µs {whole - on:>8.1f} µs")
        return
    results = measure(options.scripts, max(options.calls // options.batch, 2_000), options.rounds, log, options.aof)
    print(f"{'script':<40} {'rate limit on':>16} {'rate limit off':>16}   (Redis CPU per call, medians)")
    for script, modes in results.items():
        on, off = modes["rate_limit_on"], modes["rate_limit_off"]
        print(f"{os.path.basename(script):<40} {on['cpu_us_per_call']:>13.1f} µs {off['cpu_us_per_call']:>13.1f} µs"
              f"   granted {on['granted']:,} / {off['granted']:,}")


if __name__ == "__main__":
    main()
