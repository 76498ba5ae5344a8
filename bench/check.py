#!/usr/bin/env python3
"""Same answers first: compares the final results of the systems on one job.

    check.py --job j1 [--gen-args "..."] [--oracle-cache FILE] [--json OUT] SYSTEM=DUMP [SYSTEM=DUMP ...]

Each DUMP is an output topic read with `kcat -C -J -e` (one JSON envelope per line; the
row is the envelope's "payload"). For each system the final view is built as the
pipeline spec says: an upsert stream keyed by (key, window_start, window_end), in
partition/offset order, where a `"retracted": true` row deletes its key. Then:

- normalizations (pure representation differences, listed in the report):
  * kstreams (and its variants, kstreams-*), j3: Kafka Streams session windows are [first, last] event times; streamc
    and Flink use [first, last + gap). window_end += 30000.
  * the end-of-input sentinel user (999999999) is dropped from every system: it only
    exists to move watermarks / stream time past the last window (bench/README.md).
- the oracle: with --gen-args, the expected result is computed here from the generator's
  own events (bench/gen.py: too-late events known by construction, amounts in cents), so
  a disagreement says which side is wrong. --oracle-cache keeps it in a file (pickle)
  for the next check of the same job and input: bench/run checks every run.
- comparison of every system with the oracle (or with the first system): the same set of
  windows; counts exact; sums exact to the cent (the inputs have 2 decimals; the float
  sums may differ in the last bits when session merges add partial sums in another order;
  how many are bit-identical is reported too); avg within 1e-9 relative; max exact.

Exit status 0 when every system agrees with the reference, 1 otherwise.
"""
import argparse
import json
import os
import pickle
import shlex
import sys
from collections import defaultdict

SENTINEL_USER = 999_999_999
GAP = 30_000

AGGS = {
    "j1": {"cnt": "exact", "sum_amount": "cents", "avg_latency_ms": "rel"},
    "j2": {"cnt": "exact", "max_latency_ms": "exact"},
    "j3": {"cnt": "exact", "sum_amount": "cents"},
}


def final_view(system, job, path):
    """(view, stats): view maps (user, start, end) -> row."""
    msgs = []
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            env = json.loads(line)
            if env.get("payload") is None:
                continue
            msgs.append((env["partition"], env["offset"], env["payload"]))
    msgs.sort(key=lambda m: (m[0], m[1]))
    view = {}
    retractions = 0
    revisions = 0
    for _, _, payload in msgs:
        row = json.loads(payload)
        user = row["user_id"]
        if user == SENTINEL_USER:
            continue
        start, end = row["window_start"], row["window_end"]
        if (system == "kstreams" or system.startswith("kstreams-")) and job == "j3":
            end += GAP
        k = (user, start, end)
        if row.get("retracted"):
            retractions += 1
            view.pop(k, None)
            continue
        if k in view:
            revisions += 1
        # only the aggregates (a 10M-event run's view has millions of rows)
        view[k] = {name: row.get(name) for name in AGGS[job] if name in row}
    return view, {"messages": len(msgs), "windows": len(view), "updates": revisions, "retractions": retractions}


def oracle(job, gen_args):
    """The expected final view, from the generator's events."""
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    import gen  # noqa: E402

    a = gen.parser().parse_args(shlex.split(gen_args))
    per_user = defaultdict(list)
    late = 0
    for user, ts, amt, lat, kind, _ in gen.events(a):
        if kind == gen.LATE:
            late += 1
            continue
        per_user[user].append((ts, amt, lat))
    view = {}
    for user, evs in per_user.items():
        if job == "j1":
            acc = {}
            for ts, amt, lat in evs:  # arrival order: the float sums add in this order
                s = ts - ts % 60_000
                c = acc.setdefault(s, [0, 0, 0.0, 0.0])
                c[0] += 1
                c[1] += amt
                c[2] += lat / 100
                c[3] += amt / 100
            for s, (n, cents, latsum, amtsum) in acc.items():
                view[(user, s, s + 60_000)] = {"cnt": n, "sum_amount": amtsum, "avg_latency_ms": latsum / n,
                                               "_cents": cents}
        elif job == "j2":
            acc = {}
            for ts, amt, lat in evs:
                last = ts - ts % 60_000
                for s in range(last - 240_000, last + 1, 60_000):
                    c = acc.setdefault(s, [0, -1])
                    c[0] += 1
                    c[1] = max(c[1], lat)
            for s, (n, mx) in acc.items():
                view[(user, s, s + 300_000)] = {"cnt": n, "max_latency_ms": mx / 100}
        else:
            evs = sorted(evs, key=lambda e: e[0])
            cur = None
            for ts, amt, lat in evs:
                if cur is not None and ts <= cur[1]:  # [ts, ts+gap) touches or overlaps
                    cur[1] = max(cur[1], ts + GAP)
                    cur[2] += 1
                    cur[3] += amt
                    cur[4] += amt / 100
                else:
                    if cur is not None:
                        view[(user, cur[0], cur[1])] = {"cnt": cur[2], "sum_amount": cur[4], "_cents": cur[3]}
                    cur = [ts, ts + GAP, 1, amt, amt / 100]
            if cur is not None:
                view[(user, cur[0], cur[1])] = {"cnt": cur[2], "sum_amount": cur[4], "_cents": cur[3]}
    return view, late


def cents(row, name):
    if "_cents" in row:
        return row["_cents"]
    return round(row[name] * 100)


def cached_oracle(job, gen_args, path):
    """oracle(), kept in `path` for the next check of the same job and input."""
    if path and os.path.exists(path):
        with open(path, "rb") as f:
            have = pickle.load(f)
        if have.get("job") == job and have.get("gen_args") == gen_args:
            return have["view"], have["late"]
    view, late = oracle(job, gen_args)
    if path:
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            pickle.dump({"job": job, "gen_args": gen_args, "view": view, "late": late}, f,
                        protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    return view, late


def compare(job, ref, got, limit=5):
    """Differences of view `got` from view `ref`: (counts, examples, bit-identical sums)."""
    diffs = {"missing": 0, "extra": 0, "values": 0}
    examples = []
    identical_sums = 0
    sums = 0
    for k, r in ref.items():
        g = got.get(k)
        if g is None:
            diffs["missing"] += 1
            if len(examples) < limit:
                examples.append(f"missing window {k}: expected {strip(r)}")
            continue
        bad = []
        for name, how in AGGS[job].items():
            rv, gv = r.get(name), g.get(name)
            if gv is None:
                bad.append(f"{name} absent")
            elif how == "exact":
                if rv != gv:
                    bad.append(f"{name} {gv} != {rv}")
            elif how == "cents":
                sums += 1
                if cents(r, name) != cents(g, name):
                    bad.append(f"{name} {gv} != {rv}")
                elif float(gv) == float(r[name]):
                    identical_sums += 1
            elif how == "rel":
                if abs(gv - rv) > 1e-9 * max(abs(rv), 1e-300):
                    bad.append(f"{name} {gv} != {rv}")
        if bad:
            diffs["values"] += 1
            if len(examples) < limit:
                examples.append(f"window {k}: " + ", ".join(bad))
    for k, g in got.items():
        if k not in ref:
            diffs["extra"] += 1
            if len(examples) < limit:
                examples.append(f"unexpected window {k}: {strip(g)}")
    return diffs, examples, (identical_sums, sums)


def strip(row):
    return {k: v for k, v in row.items() if not k.startswith("_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", required=True, choices=sorted(AGGS))
    ap.add_argument("--gen-args", help="the generator's options, for the oracle")
    ap.add_argument("--json", help="write the summary here")
    ap.add_argument("--oracle-cache", help="keep the oracle in this file (and use it if it is there)")
    ap.add_argument("dumps", nargs="+", metavar="SYSTEM=DUMP")
    a = ap.parse_args()

    views = {}
    stats = {}
    for d in a.dumps:
        system, path = d.split("=", 1)
        views[system], stats[system] = final_view(system, a.job, path)

    if a.gen_args is not None:
        ref_name = "oracle"
        ref, late = cached_oracle(a.job, a.gen_args, a.oracle_cache)
        stats["oracle"] = {"windows": len(ref), "too_late_events": late}
    else:
        ref_name = next(iter(views))
        ref = views[ref_name]

    result = {"job": a.job, "reference": ref_name, "systems": {}, "ok": True}
    print(f"{a.job}: reference = {ref_name} ({len(ref)} windows)")
    for system, view in views.items():
        if system == ref_name:
            continue
        diffs, examples, (same_bits, sums) = compare(a.job, ref, view)
        ok = not any(diffs.values())
        result["ok"] &= ok
        result["systems"][system] = {"ok": ok, **diffs, **stats[system],
                                     "sums_bit_identical": same_bits, "sums": sums, "examples": examples}
        s = stats[system]
        verdict = "SAME" if ok else "DIFFERENT"
        print(f"  {system:<12} {verdict:<9} windows={s['windows']} messages={s['messages']} "
              f"updates={s['updates']} retractions={s['retractions']} "
              f"missing={diffs['missing']} extra={diffs['extra']} wrong={diffs['values']}"
              + (f" sums bit-identical {same_bits}/{sums}" if sums else ""))
        for e in examples:
            print(f"      {e}")
    if "oracle" in stats:
        result["oracle"] = stats["oracle"]
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
