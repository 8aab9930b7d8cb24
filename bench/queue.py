#!/usr/bin/env python3
"""The waiting room's costs: polls against the baseline, joins against reservations, the memory of a
queued consumer, and the opening of a 1,000,000-member pre-queue under reservation load.

usage: BIN=.build/release REDIS_PORT=6396 REDIS_URL=redis://127.0.0.1:6396 DATABASE_URL=... \
       bench/queue.py [rounds] [seconds]

One gateway (CONSUMER_AUTH=trusted, RESERVE_RATE_LIMIT=0) and the baseline server on one Redis:
1. polls: 10,000 consumers join an open room (tickets kept from the join answers); each round
   runs wrk -t2 -c64 against the baseline, then GET polls cycling through those tickets
   (bench/queue_poll.lua): gateway CPU per poll ÷ baseline CPU per request, and the Redis room
   reads (gateway_queue_room_reads_total) and Redis CPU per poll;
2. joins against reservations, alternating within each round: wrk joins with a new consumer per
   request on a room (bench/queue_join.lua), wrk reservations with a new consumer per request on
   a plain basket of 10^9 units (bench/reserve.lua): Redis CPU per call from /proc;
3. memory: after a FLUSHALL, a room opening in an hour is joined by 1,000,000 consumers ("c0000001"
   ...; wrk joins until the members hash holds them all): INFO memory's used_memory before and
   after ÷ members, and MEMORY USAGE of the room and members hashes;
4. the opening: wrk reserves on a separate plain basket for `seconds` while, a third of the way in,
   the room's opensAt is PATCHed to now and one pre-queue ticket is polled every 100 ms (the first
   poll after the opening makes the draw); then an identical run (the same PATCH and polls, the
   room already drawn): reserve p99 of the run spanning the opening ÷ the later run's, and the
   draw as the basket view shows it (drawnAt, preQueue). One opening per run (a pre-queue draws once).
CPU per request from /proc/<pid>/stat as bench/run.py measures it, medians over rounds.
QUEUE_POLLS_ONLY=1 runs section 1 alone; QUEUE_POLLS_OTHER_BIN=<another build's bin directory>
adds that build's gateway, polled in the same rounds (both ÷ baseline, and this ÷ the other).
"""
import os
import sys

# This file's name is the standard library's `queue` (concurrent.futures needs that one): bench/
# goes to the end of sys.path, after the standard library, before anything imports it.
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != BENCH_DIR] + [BENCH_DIR]

import concurrent.futures  # noqa: E402
import datetime
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import run as bench  # noqa: E402

PORT, BASELINE_PORT = 8121, 8122
# bench.http / bench.create_basket talk to bench.GATEWAY_PORT: this script's gateway
bench.GATEWAY_PORT = PORT
ADMIN_HEADERS = {"Authorization": f"Bearer {bench.ADMIN}", "Content-Type": "application/json"}
POLL_CONSUMERS = int(os.environ.get("QUEUE_POLL_CONSUMERS", "10000"))
# QUEUE_POLLS_ONLY=1: section 1 only (for working on the poll's cost)
POLLS_ONLY = os.environ.get("QUEUE_POLLS_ONLY") == "1"
# QUEUE_POLLS_OTHER_BIN=<dir>: a second gateway of another build (same Redis, same secret) polled
# in the same rounds, for a side-by-side figure (section 1 only)
OTHER_BIN = os.environ.get("QUEUE_POLLS_OTHER_BIN")
OTHER_PORT = 8123
MEMBERS = int(os.environ.get("QUEUE_MEMBERS", "1000000"))
JOIN_SCRIPT, POLL_SCRIPT = os.path.join(BENCH_DIR, "queue_join.lua"), os.path.join(BENCH_DIR, "queue_poll.lua")
RESERVE_SCRIPT = os.path.join(BENCH_DIR, "reserve.lua")


def rfc3339(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def create_room(basket, opens_at=None, per_minute=1):
    body = {"stock": 10**9, "waitingRoom": {"admitPerMinute": per_minute, "admissionSeconds": 300}}
    if opens_at is not None:
        body["opensAt"] = rfc3339(opens_at)
    status, answer = bench.http("PUT", f"/v1/baskets/{basket}", json.dumps(body), ADMIN_HEADERS)
    assert status == 201, (status, answer)


def join(basket, consumer):
    status, answer = bench.http("POST", f"/v1/baskets/{basket}/queue", json.dumps({"consumerId": consumer}),
                                {"Content-Type": "application/json"})
    assert status == 200, (status, answer)
    return answer


def queue_counters():
    """(polls, room reads from Redis) this gateway has counted, from its /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
    value = lambda name: int(float(re.search(rf"^{name} (\S+)", text, re.M).group(1)))
    return value("gateway_queue_polls_total"), value("gateway_queue_room_reads_total")


def with_room_reads(run):
    """Runs `run` and adds the Redis room reads per poll over it (Δ reads ÷ Δ polls)."""
    polls, reads = queue_counters()
    result = run()
    polls_after, reads_after = queue_counters()
    result["polls"], result["room_reads"] = polls_after - polls, reads_after - reads
    result["room_reads_per_poll"] = result["room_reads"] / max(result["polls"], 1)
    return result


def room_keys(basket):
    """(room hash, members hash) as the gateway names them: the basket's partition first."""
    partition = re.match(r"(\{[^}]*\})", bench.script_cost.basket_keys(basket)[0]["basketKey"]).group(1)
    return f"{partition}:q:{basket}", f"{partition}:qm:{basket}"


def used_memory():
    return int(re.search(r"^used_memory:(\d+)", bench.redis("INFO", "memory"), re.M).group(1))


def polls_measure(gateway, baseline, rounds, seconds, work, other=None):
    """Section 1: the poll rounds, alternating with the baseline."""
    bench.log(f"polls: {POLL_CONSUMERS:,} consumers join the room q-poll")
    create_room("q-poll")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        tickets = list(pool.map(lambda n: join("q-poll", f"p{n:07d}")["ticket"], range(1, POLL_CONSUMERS + 1)))
    states = {}
    tickets_file = os.path.join(work, "tickets")
    with open(tickets_file, "w") as out:
        out.write("\n".join(tickets) + "\n")
    # Right after the joins, a poll of the newest tickets can be refused for up to a second (this
    # gateway's room cache may keep a concurrent join's older snapshot, with fewer joined): counted
    # here, then the cache refreshes.
    refused_fresh = sum(bench.http("GET", f"/v1/baskets/q-poll/queue/{t}")[0] == 404 for t in reversed(tickets[-200:]))
    time.sleep(1.2)
    status, sample = bench.http("GET", f"/v1/baskets/q-poll/queue/{tickets[-1]}")
    assert status == 200, (status, sample)
    bench.log("polls: warming up")
    bench.wrk(BASELINE_PORT, seconds=2)
    bench.wrk(PORT, POLL_SCRIPT, ["q-poll", tickets_file], seconds=2)
    runs = {"baseline": [], "poll": []}
    if other:
        bench.wrk(OTHER_PORT, POLL_SCRIPT, ["q-poll", tickets_file], seconds=2)
        runs["poll_other"] = []
    for round_number in range(rounds):
        bench.log(f"polls round {round_number + 1}/{rounds}: baseline, polls ({seconds} s each)")
        runs["baseline"].append(bench.measured({"process": baseline.pid}, lambda: bench.wrk(BASELINE_PORT, seconds=seconds)))
        runs["poll"].append(bench.measured({"process": gateway.pid, "redis": bench.redis_pid()}, lambda: with_room_reads(
            lambda: bench.wrk(PORT, POLL_SCRIPT, ["q-poll", tickets_file], seconds=seconds))))
        if other:
            runs["poll_other"].append(bench.measured({"process": other.pid}, lambda: bench.wrk(
                OTHER_PORT, POLL_SCRIPT, ["q-poll", tickets_file], seconds=seconds)))
    for ticket in tickets[:50] + tickets[-50:]:
        state = bench.http("GET", f"/v1/baskets/q-poll/queue/{ticket}")[1].get("state")
        states[state] = states.get(state, 0) + 1
    for baseline_run, poll_run in zip(runs["baseline"], runs["poll"]):
        poll_run["cpu_ratio"] = poll_run["cpu_us_per_request"]["process"] / baseline_run["cpu_us_per_request"]["process"]
    for baseline_run, poll_run, other_run in zip(runs["baseline"], runs["poll"], runs.get("poll_other", [])):
        other_run["cpu_ratio"] = other_run["cpu_us_per_request"]["process"] / baseline_run["cpu_us_per_request"]["process"]
        poll_run["cpu_ratio_to_other"] = poll_run["cpu_us_per_request"]["process"] / other_run["cpu_us_per_request"]["process"]
    return {"rounds": runs, "sampled_states": states, "sample_view": sample, "fresh_tickets_refused_of_200": refused_fresh}


def join_vs_reserve(gateway, rounds, seconds):
    """Section 2: joins (a new consumer each) against reservations (a new consumer each)."""
    create_room("q-join")
    bench.create_basket("q-huge", 10**9)
    pids = {"process": gateway.pid, "redis": bench.redis_pid()}
    bench.log("joins and reservations: warming up")
    bench.wrk(PORT, JOIN_SCRIPT, ["q-join", "jw"], seconds=2)
    bench.wrk(PORT, RESERVE_SCRIPT, ["q-huge", "rw"], seconds=2)
    runs = {"join": [], "reserve": []}
    for round_number in range(rounds):
        bench.log(f"joins round {round_number + 1}/{rounds}: join, reserve ({seconds} s each)")
        sides = [("join", JOIN_SCRIPT, "q-join", f"j{round_number}"), ("reserve", RESERVE_SCRIPT, "q-huge", f"r{round_number}")]
        for name, script, basket, prefix in (sides if round_number % 2 == 0 else sides[::-1]):
            runs[name].append(bench.measured(pids, lambda: bench.wrk(PORT, script, [basket, prefix], seconds=seconds)))
    return {"rounds": runs, "members": int(bench.redis("HLEN", room_keys("q-join")[1]))}


def fill_prequeue(basket, members):
    """Section 3: `members` consumers join the room (c0000000 by this script, for its ticket; the
    rest by wrk, until the members hash holds them all; a join wrk lost, if any, is made up by this
    script with a further id). Returns the memory figures and c0000000's ticket."""
    room_key, members_key = room_keys(basket)
    before = used_memory()
    probe = join(basket, "c0000000")
    assert probe["state"] == "prequeue", probe
    bench.log(f"memory: wrk joins {members:,} consumers to {basket} (opens in an hour)")
    started = time.monotonic()
    load = subprocess.Popen(["wrk", "-t2", f"-c{bench.CONNECTIONS}", "-d900s", "-s", JOIN_SCRIPT, f"http://127.0.0.1:{PORT}/",
                             "--", basket, "seq", "1", str(members - 1), "2"], stdout=subprocess.PIPE, text=True)
    held, last_change, last_held = 0, time.monotonic(), -1
    try:
        while True:
            held = int(bench.redis("HLEN", members_key))
            if held >= members or load.poll() is not None:
                break
            if held != last_held:
                last_held, last_change = held, time.monotonic()
            elif time.monotonic() - last_change > 3:
                bench.log(f"memory: the members hash stopped growing at {held:,}")
                break
            time.sleep(0.2)
        filled = time.monotonic() if held >= members else last_change
    finally:
        if load.poll() is None:
            load.send_signal(signal.SIGINT)  # wrk prints its summary
        output = load.communicate()[0]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output or "")
    socket_errors = re.search(r"Socket errors: (.*)", output or "")
    by_wrk = int(bench.redis("HLEN", members_key))
    # joins wrk never sent: it calls request() once to check the script (thread 1's first id,
    # c0000001, is never sent), and a connection error drops the request it carried. Further ids
    # make them up, so every member is still one consumer of the "c%07d" shape.
    number = members
    while int(bench.redis("HLEN", members_key)) < members:
        join(basket, f"c{number:07d}")
        number += 1
    held = int(bench.redis("HLEN", members_key))
    after = used_memory()
    return {
        "members": held, "joined_by_wrk": by_wrk - 1, "made_up": held - by_wrk, "wrk_non_2xx": int(errors.group(1)) if errors else 0,
        "wrk_socket_errors": socket_errors.group(1).strip() if socket_errors else "",
        "seconds_to_fill": filled - started, "joins_per_second": (by_wrk - 1) / (filled - started),
        "used_memory_before": before, "used_memory_after": after, "bytes_per_member": (after - before) / max(held, 1),
        "memory_usage_members_hash": int(bench.redis("MEMORY", "USAGE", members_key, "SAMPLES", "0")),
        "memory_usage_room_hash": int(bench.redis("MEMORY", "USAGE", room_key, "SAMPLES", "0")),
        "members_hash_encoding": bench.redis("OBJECT", "ENCODING", members_key),
    }, probe["ticket"]


def aof_rewrites():
    """(rewrites done since Redis started, one in progress now)."""
    info = bench.redis("INFO", "persistence")
    return int(re.search(r"aof_rewrites:(\d+)", info).group(1)), "aof_rewrite_in_progress:1" in info


def quiet_redis():
    """With AOF on, rewrites it now and waits (up to a minute) for the rewrite to end: a fresh base
    makes an automatic rewrite (a fork, a latency spike) during the next run unlikely, and the
    runs compared start alike. Each run still reports the rewrites during it."""
    if "aof_enabled:1" in bench.redis("INFO", "persistence"):
        for _ in range(600):
            if not aof_rewrites()[1]:
                break
            time.sleep(0.1)
        bench.redis("BGREWRITEAOF")
        time.sleep(0.2)
    for _ in range(600):
        info = bench.redis("INFO", "persistence")
        if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
            return
        time.sleep(0.1)


def reserve_with_polls(gateway, basket, prefix, seconds, room, ticket, opens_in=0):
    """One wrk reserve run on `basket`; a third of the way in, PATCH `room`'s opensAt to now (plus
    `opens_in` seconds), then poll `ticket` every 100 ms until the run ends (each poll with the
    ticket the last answered)."""
    quiet_redis()
    rewrites = aof_rewrites()[0]
    result = {}
    pids = {"process": gateway.pid, "redis": bench.redis_pid()}
    load = threading.Thread(target=lambda: result.update(bench.measured(
        pids, lambda: bench.wrk(PORT, RESERVE_SCRIPT, [basket, prefix], seconds=seconds))))
    load.start()
    time.sleep(seconds / 3)
    opened = time.time()
    status, answer = bench.http("PATCH", f"/v1/baskets/{room}", json.dumps({"opensAt": rfc3339(opened + opens_in)}), ADMIN_HEADERS)
    assert status == 200, (status, answer)
    patched = time.time()
    polls = []
    while load.is_alive():
        asked = time.time()
        status, view = bench.http("GET", f"/v1/baskets/{room}/queue/{ticket}")
        polls.append({"at": asked - opened, "ms": (time.time() - asked) * 1000, "status": status, "state": view.get("state"),
                      "position": view.get("position")})
        if status == 200:
            ticket = view["ticket"]
        time.sleep(0.1)
    load.join()
    result.update({"patch_ms": (patched - opened) * 1000, "opened_at": opened, "polls": polls,
                   "aof_rewrites_during": aof_rewrites()[0] - rewrites})
    return result, ticket


def opening(gateway, seconds, ticket):
    """Section 4: the reserve run spanning the opening of the pre-queue, then an identical one."""
    bench.log("opening: warming up reservations on q-plain")
    bench.wrk(PORT, RESERVE_SCRIPT, ["q-plain", "ow"], seconds=2)
    bench.log(f"opening: an identical run before the opening (the PATCH moves opensAt to an hour ahead again)")
    before, ticket = reserve_with_polls(gateway, "q-plain", "o0", seconds, "q-pre", ticket, opens_in=3600)
    assert all(p["state"] == "prequeue" for p in before["polls"]), before["polls"]
    time.sleep(2)
    bench.log(f"opening: reserve on q-plain for {seconds} s, opening q-pre's room a third of the way in")
    spanning, ticket = reserve_with_polls(gateway, "q-plain", "o1", seconds, "q-pre", ticket)
    view = bench.http("GET", "/v1/baskets/q-pre")[1]
    time.sleep(2)
    bench.log(f"opening: the identical run {seconds} s later (the room already drawn)")
    later, _ = reserve_with_polls(gateway, "q-plain", "o2", seconds, "q-pre", ticket)
    room = view.get("waitingRoom") or {}
    drawn_at = parse_rfc3339(room["drawnAt"]) if room.get("drawnAt") else None
    drawing = next((p for p in spanning["polls"] if p["state"] != "prequeue"), None)
    return {
        "before": before, "spanning": spanning, "later": later, "p99_ratio": spanning["p99_ms"] / later["p99_ms"],
        "p99_ratio_to_before": spanning["p99_ms"] / before["p99_ms"],
        "pre_queue": room.get("preQueue"), "members": room.get("members"), "drawn_at": room.get("drawnAt"), "seed": room.get("seed"),
        "drawn_after_patch_ms": (drawn_at - spanning["opened_at"]) * 1000 if drawn_at else None,
        "drawing_poll": drawing,
    }


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    binary = os.environ["BIN"]
    work = tempfile.mkdtemp(prefix="bench-queue-")
    bench.redis("FLUSHALL")
    environment = dict(os.environ, ADMIN_TOKEN=bench.ADMIN, WEBHOOK_SECRET="bench-secret", ADMISSION_SECRET="bench-admission-secret",
                       CONSUMER_AUTH="trusted", RESERVE_RATE_LIMIT="0", LOG_LEVEL="error", GATEWAY_PORT=str(PORT))
    started = time.monotonic()
    gateway = subprocess.Popen([f"{binary}/gateway"], env=environment)
    baseline = subprocess.Popen([f"{binary}/bench-baseline", str(BASELINE_PORT)], stdout=subprocess.DEVNULL)
    other = subprocess.Popen([f"{OTHER_BIN}/gateway"], env=dict(environment, GATEWAY_PORT=str(OTHER_PORT))) if OTHER_BIN else None
    results = {"machine": bench.machine(), "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "settings": {"rounds": rounds, "seconds": seconds, "connections": bench.CONNECTIONS, "wrk_threads": 2,
                            "poll_consumers": POLL_CONSUMERS, "members": MEMBERS,
                            "redis_appendonly": bench.redis("CONFIG", "GET", "appendonly").split()[-1],
                            "redis_appendfsync": bench.redis("CONFIG", "GET", "appendfsync").split()[-1]}}
    try:
        bench.wait_http(PORT)
        bench.wait_http(BASELINE_PORT)
        if other:
            bench.wait_http(OTHER_PORT)
        results["polls"] = polls_measure(gateway, baseline, rounds, seconds, work, other)
        if POLLS_ONLY:
            print_polls(results)
            return
        results["joins"] = join_vs_reserve(gateway, rounds, seconds)
        baseline.terminate()
        bench.log("memory: FLUSHALL, then the room q-pre (opens in an hour) and the plain basket q-plain")
        bench.redis("FLUSHALL")
        create_room("q-pre", opens_at=time.time() + 3600, per_minute=600)
        bench.create_basket("q-plain", 10**9)
        results["memory"], ticket = fill_prequeue("q-pre", MEMBERS)
        results["opening"] = opening(gateway, seconds, ticket)
    finally:
        for process in (gateway, baseline, other):
            if process and process.poll() is None:
                process.terminate()
        for process in (gateway, baseline, other):
            if process:
                process.wait()
    results["wall_seconds"] = time.monotonic() - started
    os.makedirs(os.path.join(bench.ROOT, "bench-results"), exist_ok=True)
    with open(os.path.join(bench.ROOT, "bench-results", "queue.json"), "w") as out:
        json.dump(results, out, indent=2)
    print_table(results)


def print_polls(results):
    """QUEUE_POLLS_ONLY=1: section 1's figures alone."""
    rounds = results["polls"]["rounds"]
    base = [r["cpu_us_per_request"]["process"] for r in rounds["baseline"]]
    poll = [r["cpu_us_per_request"]["process"] for r in rounds["poll"]]
    ratios = [r["cpu_ratio"] for r in rounds["poll"]]
    print(f"baseline {statistics.median(base):.1f} µs, poll {statistics.median(poll):.1f} µs of CPU per request; "
          f"poll CPU ÷ baseline {statistics.median(ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)})")
    if "poll_other" in rounds:
        other = [r["cpu_us_per_request"]["process"] for r in rounds["poll_other"]]
        other_ratios = [r["cpu_ratio"] for r in rounds["poll_other"]]
        to_other = [r["cpu_ratio_to_other"] for r in rounds["poll"]]
        print(f"other build (QUEUE_POLLS_OTHER_BIN): poll {statistics.median(other):.1f} µs, ÷ baseline "
              f"{statistics.median(other_ratios):.2f} (rounds {', '.join(f'{r:.2f}' for r in other_ratios)}); "
              f"this build ÷ other {statistics.median(to_other):.2f} (rounds {', '.join(f'{r:.2f}' for r in to_other)})")


def print_table(results):
    m, s = results["machine"], results["settings"]
    polls, joins, memory, opening_run = results["polls"]["rounds"], results["joins"]["rounds"], results["memory"], results["opening"]
    per_round = lambda values, form="{:.2f}": ", ".join(form.format(v) for v in values)
    median = statistics.median
    base_rps, _, base_cpu, _, _ = bench.medians(polls["baseline"])
    poll_rps, poll_p99, poll_cpu, poll_redis, poll_errors = bench.medians(polls["poll"])
    ratios = [r["cpu_ratio"] for r in polls["poll"]]
    reads = [r["room_reads_per_poll"] for r in polls["poll"]]
    join_rps, join_p99, join_cpu, join_redis, join_errors = bench.medians(joins["join"])
    res_rps, res_p99, res_cpu, res_redis, res_errors = bench.medians(joins["reserve"])
    before, spanning, later = opening_run["before"], opening_run["spanning"], opening_run["later"]
    drawing = opening_run["drawing_poll"] or {}
    rows = [
        ("baseline (SwiftNIO hello world)", f"{base_rps:,.0f} req/s", f"CPU {base_cpu:.1f} µs per request; rounds {per_round([r['cpu_us_per_request']['process'] for r in polls['baseline']], '{:.1f}')}"),
        (f"polls, {s['poll_consumers']:,} tickets", f"{poll_rps:,.0f}/s, p99 {poll_p99:.2f} ms",
         f"gateway CPU {poll_cpu:.1f} µs per poll; {poll_errors} non-2xx; states sampled {results['polls']['sampled_states']}; "
         f"{results['polls']['fresh_tickets_refused_of_200']} of the 200 newest tickets 404 right after the joins"),
        ("poll CPU ÷ baseline", f"{median(ratios):.2f}", f"target <= 1.3; rounds {per_round(ratios)}"),
        ("Redis room reads per poll", f"{median(reads):.6f}",
         f"target ~0; rounds {per_round(reads, '{:.6f}')} ({sum(r['room_reads'] for r in polls['poll'])} reads in "
         f"{sum(r['polls'] for r in polls['poll']):,} polls); Redis CPU {poll_redis:.3f} µs per poll"),
        ("joins (new consumer each)", f"{join_rps:,.0f}/s, p99 {join_p99:.2f} ms",
         f"Redis CPU {join_redis:.1f} µs per join (rounds {per_round([r['cpu_us_per_request']['redis'] for r in joins['join']], '{:.1f}')}); "
         f"gateway {join_cpu:.1f} µs; {join_errors} non-2xx"),
        ("reservations (new consumer each)", f"{res_rps:,.0f}/s, p99 {res_p99:.2f} ms",
         f"Redis CPU {res_redis:.1f} µs per reservation (rounds {per_round([r['cpu_us_per_request']['redis'] for r in joins['reserve']], '{:.1f}')}); "
         f"gateway {res_cpu:.1f} µs; {res_errors} non-2xx"),
        ("Redis CPU join ÷ reserve", f"{join_redis / res_redis:.2f}",
         f"target <= 1.0; rounds {per_round([j['cpu_us_per_request']['redis'] / r['cpu_us_per_request']['redis'] for j, r in zip(joins['join'], joins['reserve'])])}"),
        (f"memory per queued consumer ({memory['members']:,})", f"{memory['bytes_per_member']:.1f} bytes",
         f"target <= 150; used_memory +{(memory['used_memory_after'] - memory['used_memory_before']) / 2**20:.1f} MiB; "
         f"MEMORY USAGE members hash {memory['memory_usage_members_hash'] / 2**20:.1f} MiB "
         f"({memory['memory_usage_members_hash'] / max(memory['members'], 1):.1f} B each, {memory['members_hash_encoding']}), "
         f"room hash {memory['memory_usage_room_hash']} B"),
        ("filling the pre-queue", f"{memory['joins_per_second']:,.0f} joins/s",
         f"{memory['seconds_to_fill']:.1f} s for {memory['joined_by_wrk']:,} by wrk ({memory['wrk_non_2xx']} non-2xx, "
         f"socket errors: {memory['wrk_socket_errors'] or 'none'}); {memory['made_up']} joins wrk never sent made up after"),
    ] + [
        (label, f"{run['p99_ms']:.2f} ms",
         f"{run['rps']:,.0f}/s, p50 {run['p50_ms']:.2f} ms, Redis {run['cpu_us_per_request']['redis']:.1f} µs per reservation, "
         f"{run['non_2xx']} non-2xx, {run['aof_rewrites_during']} AOF rewrites")
        for label, run in (("reserve p99, identical run before", before), ("reserve p99 spanning the opening", spanning),
                           ("reserve p99, identical run later", later))
    ] + [
        ("p99 opening ÷ later", f"{opening_run['p99_ratio']:.2f}",
         f"target <= 2 (one opening: a single sample); ÷ the run before {opening_run['p99_ratio_to_before']:.2f}"),
        ("the draw", f"preQueue {opening_run['pre_queue']}",
         f"drawnAt {opening_run['drawn_at']} ({opening_run['drawn_after_patch_ms'] or float('nan'):.0f} ms after the PATCH was sent; "
         f"PATCH {spanning['patch_ms']:.1f} ms); the drawing poll {drawing.get('ms', float('nan')):.1f} ms -> {drawing.get('state')} "
         f"position {drawing.get('position')}; polls during the run max {max(p['ms'] for p in spanning['polls']):.1f} ms"),
    ]
    print(f"\nmachine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
          f"wrk -t2 -c{s['connections']}, {s['rounds']} x {s['seconds']} s rounds, medians; Redis appendonly "
          f"{s['redis_appendonly']} ({s['redis_appendfsync']}); {results['wall_seconds']:.0f} s in all\n")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>26}  {note}")
    print("\nwritten to bench-results/queue.json")


if __name__ == "__main__":
    main()
