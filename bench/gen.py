#!/usr/bin/env python3
"""The benchmark's input: N click events as `key<TAB>json` lines on stdout, for
`kcat -P -K '\\t'` (bench/run pipes them into the input topic).

Deterministic: the same options give the same bytes (Python's seeded Mersenne Twister).

- user_id: 100k distinct users (--users), uniform; the message key is the user id, so
  all of a user's events are in one partition, in order (Kafka ingestion by entity key).
- Event time: event i has nominal time start + floor(i * 1000 / rate) (rate = events per
  second of *event time*; it has nothing to do with how fast the topic is written).
- Out of order: 5% of events (--ooo-fraction) are placed 1..4999 ms (--ooo-max) before
  their nominal time. Their time is always > (max event time so far - 5 s), so with a
  5 s bound they are never late in any system, whatever its watermark timing.
- Too late: a few events (--late-fraction, only in the second half of the stream, so
  every partition has moved every system's watermark by then) are placed --late-delay
  (10 min) behind the newest event time: too late for J1-J3 in every system.
- So no event is ever within allowed lateness of a fired window: results are
  deterministic (the same in every system whatever its watermark timing), each window
  fires once, and bench/check.py can compute them independently (events() below).
- About 150 bytes per event; fields the jobs do not read are parsed (or skipped) too.

The end-of-input sentinels (one per partition, an hour after the last event) are written
by bench/run with kcat -p, not by this script (see bench/README.md).

--paced: the input of the latency mode of bench/run. Instead of --count events as fast as
possible, writes --rate-per-s events per second of wall clock for --duration seconds, in
batches every --batch-ms (flushed, so that `kcat -P` appends them as they come), each with
`ts` = the wall clock when it is generated; 5% of them (--ooo-fraction) 1..4999 ms in the
past (--ooo-max), so never late with the 5 s bound; no too-late events, no sentinel. The
same JSON and users. Not deterministic in time, only in the sequence of users and
fields. At the end it prints `PACED events=N seconds=S behind_max_ms=B` on stderr (B:
how far generation ever fell behind the schedule).
"""
import argparse
import random
import sys
import time

URLS = [f"/shop/c{c}/p{p}" for c in range(20) for p in range(500)]
DEVICES = ["mobile", "desktop", "tablet"]
STATUSES = [200] * 40 + [201, 204, 301, 302, 304] + [400, 401, 403, 404, 404] + [500, 502, 503]
SENTINEL_USER = 999_999_999
NURLS, NSTATUSES, NDEVICES = len(URLS), len(STATUSES), len(DEVICES)

# kinds of events
NORMAL, OOO, LATE = 0, 1, 2


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--rate", type=int, default=10_000, help="events per second of event time")
    ap.add_argument("--start", type=int, default=1_767_225_600_000, help="epoch ms (2026-01-01)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ooo-fraction", type=float, default=0.05)
    ap.add_argument("--ooo-max", type=int, default=4999, help="ms; must stay < the 5 s bound")
    ap.add_argument("--late-fraction", type=float, default=0.0001)
    ap.add_argument("--late-delay", type=int, default=600_000, help="ms behind the newest")
    ap.add_argument("--paced", action="store_true",
                    help="write events at --rate-per-s of wall clock for --duration s, ts = now (see above)")
    ap.add_argument("--rate-per-s", type=int, default=4000, help="--paced: events per second of wall clock")
    ap.add_argument("--duration", type=float, default=150, help="--paced: seconds")
    ap.add_argument("--batch-ms", type=int, default=10, help="--paced: write a batch every MS")
    return ap


def line(r, user, ts, lat, amt):
    """One event as `key<TAB>json` (draws the url, status, device and session id from r)."""
    return (
        f'{user}\t{{"user_id":{user},"url":"{URLS[int(r() * NURLS)]}",'
        f'"status":{STATUSES[int(r() * NSTATUSES)]},"latency_ms":{lat // 100}.{lat % 100:02d},'
        f'"amount":{amt // 100}.{amt % 100:02d},"ts":{ts},'
        f'"device":"{DEVICES[int(r() * NDEVICES)]}",'
        f'"session_id":"{int(r() * 0xFFFFFFFFFFFF):012x}"}}\n'
    )


def events(a):
    """Yields (user, ts, amount_cents, latency_cents, kind, line) in production order."""
    rnd = random.Random(a.seed)
    r = rnd.random
    newest = a.start
    half = a.count // 2
    for i in range(a.count):
        nominal = a.start + i * 1000 // a.rate
        x = r()
        if i >= half and x < a.late_fraction:
            ts, kind = newest - a.late_delay, LATE
        elif x < a.ooo_fraction:
            ts, kind = nominal - 1 - int(r() * a.ooo_max), OOO
        else:
            ts, kind = nominal, NORMAL
        if ts > newest:
            newest = ts
        user = int(r() * a.users)
        lat = int(r() * 200_000)  # 0.00 .. 1999.99 ms
        amt = int(r() * 50_000)  # 0.00 .. 499.99
        yield user, ts, amt, lat, kind, line(r, user, ts, lat, amt)


def paced(a) -> None:
    """--paced: a steady wall-clock rate, ts = now (5% up to --ooo-max ms in the past)."""
    rnd = random.Random(a.seed)
    r = rnd.random
    out = sys.stdout
    t0 = time.time()
    n = 0
    behind = 0.0
    step = a.batch_ms / 1000
    total = int(a.rate_per_s * a.duration)
    tick = t0
    while n < total:
        now = time.time()
        due = min(total, int((now - t0) * a.rate_per_s))
        behind = max(behind, now - tick)
        buf = []
        while n < due:
            ms = int(time.time() * 1000)
            ts = ms - 1 - int(r() * a.ooo_max) if r() < a.ooo_fraction else ms
            user = int(r() * a.users)
            lat = int(r() * 200_000)
            amt = int(r() * 50_000)
            buf.append(line(r, user, ts, lat, amt))
            n += 1
        if buf:
            out.write("".join(buf))
            out.flush()
        tick += step
        pause = tick - time.time()
        if pause > 0:
            time.sleep(pause)
    print(f"PACED events={n} seconds={time.time() - t0:.3f} behind_max_ms={behind * 1000:.0f}",
          file=sys.stderr, flush=True)


def last_ts(a) -> int:
    """The largest event time of the stream (nominal time of the last event)."""
    return a.start + (a.count - 1) * 1000 // a.rate


def sentinel(a) -> str:
    """The end-of-input event bench/run appends to every partition (key<TAB>json)."""
    ts = last_ts(a) + 3_600_000
    return (
        f'{SENTINEL_USER}\t{{"user_id":{SENTINEL_USER},"url":"/end","status":200,'
        f'"latency_ms":0.0,"amount":0.0,"ts":{ts},"device":"none","session_id":"end"}}'
    )


def main() -> None:
    ap = parser()
    ap.add_argument("--sentinel", action="store_true", help="print only the sentinel line")
    a = ap.parse_args()
    if a.sentinel:
        print(sentinel(a))
        return
    if a.paced:
        paced(a)
        return
    out = sys.stdout
    buf = []
    for *_, line in events(a):
        buf.append(line)
        if len(buf) >= 10_000:
            out.write("".join(buf))
            buf.clear()
    out.write("".join(buf))
    out.flush()


if __name__ == "__main__":
    main()
