//! An independent oracle of a job's outputs, written from `pipeline-spec.md` ("Event
//! time, watermarks, firing", "Session merges", "Bad input") and nothing else: it shares
//! no code with the runtime or the compiler.
//!
//! It models the jobs the state tests run: one source whose records are JSON objects
//! `{user: string, value: i64, ts: timestamp}`, and partition-aligned flows keyed by
//! `user` (each key lives in one partition), so every partition is computed on its own,
//! against its own watermark. A flow is a tumbling or a session window with allowed
//! lateness and a fixed set of aggregates, computed from scratch from the events a window
//! holds. Windows live in one flat list per partition and flow; window assignment,
//! firing, merging and purging are done by brute force, in the order the spec states
//! them. It is meant to be obviously right, not fast.
//!
//! What it computes, for each flow: every result row (revisions and retractions
//! included, as rows the job writes), the too-late events (raw, unchanged), and the
//! source's dead letters (source, partition, offset, raw).

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// One parsed event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub user: String,
    pub value: i64,
    pub ts: i64,
    /// Position in its partition (the Kafka offset): arrival order, for `first`/`last`.
    pub offset: u64,
}

/// A flow's window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Tumbling { size: i64 },
    Session { gap: i64 },
}

/// An aggregate over the events of a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    /// `count()`
    Count,
    /// `sum(value)`
    Sum,
    /// `min(value)`
    Min,
    /// `max(value)`
    Max,
    /// `first(value)`: the value of the earliest event time, ties by arrival.
    First,
    /// `last(value)`: the value of the latest event time, ties by arrival.
    Last,
    /// `min(ts)`
    MinTs,
    /// `max(ts)`
    MaxTs,
}

impl Agg {
    /// The aggregate's expression in a spec.
    pub fn spec(self) -> &'static str {
        match self {
            Agg::Count => "count()",
            Agg::Sum => "sum(value)",
            Agg::Min => "min(value)",
            Agg::Max => "max(value)",
            Agg::First => "first(value)",
            Agg::Last => "last(value)",
            Agg::MinTs => "min(ts)",
            Agg::MaxTs => "max(ts)",
        }
    }

    fn of(self, evs: &[Event]) -> Value {
        let vals = evs.iter().map(|e| e.value);
        match self {
            Agg::Count => json!(evs.len()),
            Agg::Sum => json!(vals.sum::<i64>()),
            Agg::Min => json!(vals.min()),
            Agg::Max => json!(vals.max()),
            // Earliest time; among equal times, the earliest arrival.
            Agg::First => json!(evs.iter().min_by_key(|e| (e.ts, e.offset)).map(|e| e.value)),
            // Latest time; among equal times, the latest arrival.
            Agg::Last => json!(evs.iter().max_by_key(|e| (e.ts, e.offset)).map(|e| e.value)),
            Agg::MinTs => json!(evs.iter().map(|e| e.ts).min()),
            Agg::MaxTs => json!(evs.iter().map(|e| e.ts).max()),
        }
    }
}

/// One flow of the modelled job.
#[derive(Clone, Debug)]
pub struct Flow {
    pub name: String,
    pub window: Window,
    pub allowed_lateness: i64,
    /// Output name and aggregate, in output order.
    pub aggregates: Vec<(String, Agg)>,
}

/// The modelled job: one source, its watermark bound, its flows.
#[derive(Clone, Debug)]
pub struct Job {
    pub source: String,
    pub max_out_of_orderness: i64,
    pub flows: Vec<Flow>,
}

/// A dead letter as the spec defines it (the error text is the runtime's own words).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadLetter {
    pub source: String,
    pub partition: u32,
    pub offset: u64,
    pub raw: String,
}

/// What a job must output, per flow.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Every result row, per flow, in the order one partition emits them.
    pub results: BTreeMap<String, Vec<Value>>,
    /// Beside each result row: the partition and the offset of the record whose
    /// processing emitted it (`u64::MAX`: the end of input).
    pub emitted_at: BTreeMap<String, Vec<(u32, u64)>>,
    /// The too-late events of each flow, raw.
    pub late: BTreeMap<String, Vec<String>>,
    pub dead: Vec<DeadLetter>,
    pub stats: Stats,
}

/// Counts of what the input exercised (to check that a generated input covers the cases).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: usize,
    pub invalid: usize,
    /// Per flow, summed: rows with revision > 0 from an update after firing (not a merge).
    pub refires: usize,
    pub too_late: usize,
    pub retractions: usize,
    /// Merged sessions whose revision comes from an absorbed session that had not
    /// fired itself but had absorbed fired ones ("through the windows those had absorbed").
    pub inherited_revisions: usize,
    /// Merges of two or more existing sessions.
    pub bridges: usize,
}

/// Parses one record as the source's schema `{user: string, value: i64, ts: timestamp}`;
/// `None` when it is invalid (not JSON, not an object, a required field missing or null,
/// a field of the wrong type). Unknown fields are ignored.
pub fn parse(raw: &str, offset: u64) -> Option<Event> {
    let v: Value = serde_json::from_str(raw).ok()?;
    let o = v.as_object()?;
    let user = o.get("user")?.as_str()?.to_string();
    let value = o.get("value")?.as_i64()?;
    let ts = match o.get("ts")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => parse_rfc3339(s)?,
        _ => return None,
    };
    Some(Event {
        user,
        value,
        ts,
        offset,
    })
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to epoch milliseconds (the only form the generator
/// writes), else `None`.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match &s[19..s.len() - 1] {
        "" => 0,
        f if f.len() == 4 && f.starts_with('.') => num(20..23)?,
        _ => return None,
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One window of one key.
#[derive(Clone, Debug)]
struct Win {
    user: String,
    start: i64,
    end: i64,
    events: Vec<Event>,
    /// The last row emitted with these bounds (for a retraction).
    last_row: Option<Value>,
    /// The largest revision emitted by this window, or by any window it absorbed,
    /// directly or through the windows those had absorbed.
    max_rev: Option<u64>,
    /// Whether `max_rev` came only from absorbed windows (for the stats).
    inherited_unfired: bool,
}

impl Win {
    fn new(user: &str, start: i64, end: i64) -> Win {
        Win {
            user: user.to_string(),
            start,
            end,
            events: vec![],
            last_row: None,
            max_rev: None,
            inherited_unfired: false,
        }
    }

    fn fired(&self) -> bool {
        self.last_row.is_some()
    }

    /// Emits this window's next revision: 1 + the largest revision it has seen, or 0.
    fn fire(&mut self, flow: &Flow, out: &mut Vec<Value>) {
        let revision = self.max_rev.map_or(0, |r| r + 1);
        let mut row = Map::new();
        row.insert("user".into(), json!(self.user));
        row.insert("window_start".into(), json!(self.start));
        row.insert("window_end".into(), json!(self.end));
        for (name, agg) in &flow.aggregates {
            row.insert(name.clone(), agg.of(&self.events));
        }
        row.insert("revision".into(), json!(revision));
        let row = Value::Object(row);
        self.max_rev = Some(revision);
        self.last_row = Some(row.clone());
        out.push(row);
    }

    /// The retraction of its last emission: the same row with `"retracted": true`.
    fn retraction(&self) -> Option<Value> {
        let mut row = self.last_row.clone()?;
        row.as_object_mut()?.insert("retracted".into(), json!(true));
        Some(row)
    }
}

/// One flow's state in one partition.
struct FlowState<'a> {
    flow: &'a Flow,
    wins: Vec<Win>,
}

impl FlowState<'_> {
    /// Handles one event arriving with watermark `w`: `false` when it is too late.
    fn process(&mut self, e: &Event, w: i64, out: &mut Vec<Value>, stats: &mut Stats) -> bool {
        let l = self.flow.allowed_lateness;
        match self.flow.window {
            Window::Tumbling { size } => {
                let start = e.ts - e.ts.rem_euclid(size);
                let end = start + size;
                // Too late: its one window has end + L <= W.
                if end + l <= w {
                    return false;
                }
                let i = match self
                    .wins
                    .iter()
                    .position(|x| x.user == e.user && x.start == start)
                {
                    Some(i) => i,
                    None => {
                        self.wins.push(Win::new(&e.user, start, end));
                        self.wins.len() - 1
                    }
                };
                let win = &mut self.wins[i];
                win.events.push(e.clone());
                // Its window has fired (or is due): it fires (again) at once.
                if end <= w {
                    if win.fired() {
                        stats.refires += 1;
                    }
                    win.fire(self.flow, out);
                }
                true
            }
            Window::Session { gap } => {
                let (mut start, mut end) = (e.ts, e.ts + gap);
                // Every session of the key touching the cover, until none is left.
                let mut absorbed: Vec<Win> = vec![];
                while let Some(i) = self
                    .wins
                    .iter()
                    .position(|x| x.user == e.user && x.start <= end && start <= x.end)
                {
                    let x = self.wins.remove(i);
                    start = start.min(x.start);
                    end = end.max(x.end);
                    absorbed.push(x);
                }
                if absorbed.is_empty() && end + l <= w {
                    return false;
                }
                if absorbed.len() == 1 && (absorbed[0].start, absorbed[0].end) == (start, end) {
                    // Inside one session: updated in place, no retraction; a session
                    // that has fired fires again at once with its next revision.
                    let mut x = absorbed.pop().expect("one");
                    x.events.push(e.clone());
                    assert!(x.fired() || x.end > w, "an unfired session is never due");
                    if x.fired() {
                        stats.refires += 1;
                        x.fire(self.flow, out);
                    }
                    self.wins.push(x);
                    return true;
                }
                // A merge: each absorbed session that fired is retracted; the merged one
                // carries 1 + the largest revision seen by any absorbed one.
                if absorbed.len() >= 2 {
                    stats.bridges += 1;
                }
                let mut merged = Win::new(&e.user, start, end);
                for x in absorbed {
                    if let Some(r) = x.retraction() {
                        stats.retractions += 1;
                        out.push(r);
                    }
                    if x.max_rev > merged.max_rev {
                        merged.max_rev = x.max_rev;
                        merged.inherited_unfired = !x.fired();
                    }
                    merged.events.extend(x.events);
                }
                merged.events.push(e.clone());
                if end <= w {
                    if merged.inherited_unfired {
                        stats.inherited_revisions += 1;
                    }
                    merged.fire(self.flow, out);
                }
                self.wins.push(merged);
                true
            }
        }
    }

    /// The watermark has moved to `w`: every unfired window with `end <= w` fires, in
    /// order of end; then every window with `end + L <= w` is purged.
    fn advance(&mut self, w: i64, out: &mut Vec<Value>, stats: &mut Stats) {
        let l = self.flow.allowed_lateness;
        let mut due: Vec<usize> = (0..self.wins.len())
            .filter(|&i| !self.wins[i].fired() && self.wins[i].end <= w)
            .collect();
        due.sort_by_key(|&i| (self.wins[i].end, self.wins[i].start));
        for i in due {
            let flow = self.flow;
            let win = &mut self.wins[i];
            if win.inherited_unfired {
                stats.inherited_revisions += 1;
            }
            win.fire(flow, out);
        }
        self.wins.retain(|x| x.end.saturating_add(l) > w);
    }
}

impl Job {
    /// The outputs of a run over `partitions` (each partition's raw records in offset
    /// order) that reads everything and ends bounded (the watermark goes to +infinity).
    pub fn run(&self, partitions: &[Vec<String>]) -> Expected {
        self.run_with(partitions, |_, _, _| true)
    }

    /// As [`Job::run`], with a filter ahead of the windows of each flow:
    /// `keep(flow index, partition, event)`; a dropped event still moves the watermark
    /// (the watermark belongs to the source partition) and is never late.
    pub fn run_with(
        &self,
        partitions: &[Vec<String>],
        keep: impl Fn(usize, u32, &Event) -> bool,
    ) -> Expected {
        let mut x = Expected::default();
        for f in &self.flows {
            x.results.insert(f.name.clone(), vec![]);
            x.emitted_at.insert(f.name.clone(), vec![]);
            x.late.insert(f.name.clone(), vec![]);
        }
        for (p, records) in partitions.iter().enumerate() {
            let p = u32::try_from(p).expect("partition");
            let mut flows: Vec<FlowState> = self
                .flows
                .iter()
                .map(|flow| FlowState { flow, wins: vec![] })
                .collect();
            let mut outs: Vec<Vec<Value>> = vec![vec![]; flows.len()];
            let mut ats: Vec<Vec<(u32, u64)>> = vec![vec![]; flows.len()];
            let tag = |outs: &Vec<Vec<Value>>, ats: &mut Vec<Vec<(u32, u64)>>, at: u64| {
                for (o, a) in outs.iter().zip(ats.iter_mut()) {
                    a.resize(o.len(), (p, at));
                }
            };
            let mut w = i64::MIN;
            let mut max_ts = i64::MIN;
            for (offset, raw) in records.iter().enumerate() {
                let offset = offset as u64;
                let Some(e) = parse(raw, offset) else {
                    x.stats.invalid += 1;
                    x.dead.push(DeadLetter {
                        source: self.source.clone(),
                        partition: p,
                        offset,
                        raw: raw.clone(),
                    });
                    continue;
                };
                x.stats.events += 1;
                for (i, fs) in flows.iter_mut().enumerate() {
                    if !keep(i, p, &e) {
                        continue;
                    }
                    if !fs.process(&e, w, &mut outs[i], &mut x.stats) {
                        x.stats.too_late += 1;
                        x.late
                            .get_mut(&fs.flow.name)
                            .expect("flow")
                            .push(raw.clone());
                    }
                }
                // The partition's watermark, after every event.
                max_ts = max_ts.max(e.ts);
                let nw = max_ts - self.max_out_of_orderness;
                if nw > w {
                    w = nw;
                    for (i, fs) in flows.iter_mut().enumerate() {
                        fs.advance(w, &mut outs[i], &mut x.stats);
                    }
                }
                tag(&outs, &mut ats, offset);
            }
            // The end of a bounded run: W = +infinity.
            for (i, fs) in flows.iter_mut().enumerate() {
                fs.advance(i64::MAX, &mut outs[i], &mut x.stats);
                assert!(fs.wins.is_empty(), "no state is left at the end");
            }
            tag(&outs, &mut ats, u64::MAX);
            for ((fs, o), a) in flows.iter().zip(outs).zip(ats) {
                x.results.get_mut(&fs.flow.name).expect("flow").extend(o);
                x.emitted_at.get_mut(&fs.flow.name).expect("flow").extend(a);
            }
        }
        x
    }
}

/// A canonical text of a JSON value (object keys sorted), for multiset comparisons.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[*k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// A multiset of values (canonical text -> count).
pub fn multiset<'a>(items: impl IntoIterator<Item = &'a Value>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in items {
        *m.entry(canonical(v)).or_insert(0) += 1;
    }
    m
}

/// A multiset of strings.
pub fn multiset_str<'a>(items: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for v in items {
        *m.entry(v.clone()).or_insert(0) += 1;
    }
    m
}

/// What differs between two multisets, for a failure message: `(item, want, got)` for
/// each item whose counts differ, at most `limit` of them, and how many differ in all.
pub fn diff_multisets(
    want: &BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
    limit: usize,
) -> (Vec<(String, usize, usize)>, usize) {
    let mut out = vec![];
    let mut n = 0;
    for k in want
        .keys()
        .chain(got.keys().filter(|k| !want.contains_key(*k)))
    {
        let (a, b) = (
            want.get(k).copied().unwrap_or(0),
            got.get(k).copied().unwrap_or(0),
        );
        if a != b {
            n += 1;
            if out.len() < limit {
                out.push((k.clone(), a, b));
            }
        }
    }
    (out, n)
}

/// A report of the differences between two multisets ("" when equal): how many items
/// are missing and how many unexpected, with examples of each.
pub fn report_multisets(
    what: &str,
    want: &BTreeMap<String, usize>,
    got: &BTreeMap<String, usize>,
) -> String {
    let (d, n) = diff_multisets(want, got, usize::MAX);
    if n == 0 {
        return String::new();
    }
    let total = |m: &BTreeMap<String, usize>| m.values().sum::<usize>();
    let missing: Vec<&(String, usize, usize)> = d.iter().filter(|x| x.1 > x.2).collect();
    let extra: Vec<&(String, usize, usize)> = d.iter().filter(|x| x.1 < x.2).collect();
    let mut s = format!(
        "{what}: {n} distinct items differ (want {} items, got {}): {} missing or too few, {} unexpected or too many\n",
        total(want),
        total(got),
        missing.len(),
        extra.len()
    );
    for (k, a, b) in missing.iter().take(15).chain(extra.iter().take(15)) {
        s.push_str(&format!("  want {a} got {b}: {k}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: &str, value: i64, ts: i64) -> String {
        format!(r#"{{"user":"{user}","value":{value},"ts":{ts}}}"#)
    }

    fn job(window: Window, lateness: i64, ooo: i64) -> Job {
        Job {
            source: "events".into(),
            max_out_of_orderness: ooo,
            flows: vec![Flow {
                name: "f".into(),
                window,
                allowed_lateness: lateness,
                aggregates: vec![
                    ("n".into(), Agg::Count),
                    ("total".into(), Agg::Sum),
                    ("lo".into(), Agg::First),
                    ("hi".into(), Agg::Last),
                ],
            }],
        }
    }

    fn rows(x: &Expected) -> Vec<String> {
        x.results["f"].iter().map(canonical).collect()
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.600Z"), Some(1600));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.000Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.001Z"),
            Some(1_709_208_000_001)
        );
        for bad in [
            "soon",
            "2023-11-14 22:13:20Z",
            "2023-13-01T00:00:00Z",
            "1970-01-01T00:00:00.1Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn parsing_follows_the_schema() {
        assert!(parse(&ev("a", 1, 2), 0).is_some());
        assert!(parse(r#"{"user":"a","value":1,"ts":2,"x":[1]}"#, 0).is_some());
        assert!(
            parse(
                r#"{"user":"a","value":1,"ts":"1970-01-01T00:00:00.002Z"}"#,
                0
            )
            .is_some()
        );
        for bad in [
            "garbage",
            "[1,2]",
            r#"{"user":"a","ts":1}"#,
            r#"{"user":"a","value":"x","ts":1}"#,
            r#"{"user":"a","value":null,"ts":1}"#,
            r#"{"user":"a","value":1.5,"ts":1}"#,
            r#"{"user":7,"value":1,"ts":1}"#,
            r#"{"user":"a","value":1,"ts":"soon"}"#,
            r#"{"user":"a","value":1,"ts":1"#,
        ] {
            assert!(parse(bad, 0).is_none(), "{bad}");
        }
    }

    #[test]
    fn tumbling_revisions_late_and_dead_letters() {
        // size 10, lateness 10, out-of-orderness 2.
        let j = job(Window::Tumbling { size: 10 }, 10, 2);
        let x = j.run(&[vec![
            ev("a", 1, 1),
            ev("a", 2, 12), // W = 10: [0,10) fires rev 0
            ev("a", 3, 5),  // within lateness: rev 1
            "bad".into(),
            ev("a", 4, 25), // W = 23: [10,20) fires; [0,10) purged (10 + 10 <= 23)
            ev("a", 5, 9),  // too late
            ev("a", 6, 12), // [10,20): 20 + 10 > 23: rev 1
        ]]);
        let want: Vec<String> = [
            json!({"user":"a","window_start":0,"window_end":10,"n":1,"total":1,"lo":1,"hi":1,"revision":0}),
            json!({"user":"a","window_start":0,"window_end":10,"n":2,"total":4,"lo":1,"hi":3,"revision":1}),
            json!({"user":"a","window_start":10,"window_end":20,"n":1,"total":2,"lo":2,"hi":2,"revision":0}),
            json!({"user":"a","window_start":10,"window_end":20,"n":2,"total":8,"lo":2,"hi":6,"revision":1}),
            json!({"user":"a","window_start":20,"window_end":30,"n":1,"total":4,"lo":4,"hi":4,"revision":0}),
        ]
        .iter()
        .map(canonical)
        .collect();
        assert_eq!(rows(&x), want);
        assert_eq!(x.late["f"], vec![ev("a", 5, 9)]);
        // [0,10) r0 on the record at offset 1, r1 at 2; [10,20) r0 at 4, r1 at 6; the end.
        assert_eq!(
            x.emitted_at["f"],
            vec![(0, 1), (0, 2), (0, 4), (0, 6), (0, u64::MAX)]
        );
        assert_eq!(
            x.dead,
            vec![DeadLetter {
                source: "events".into(),
                partition: 0,
                offset: 3,
                raw: "bad".into()
            }]
        );
    }

    #[test]
    fn first_and_last_break_ties_by_arrival() {
        let j = job(Window::Tumbling { size: 10 }, 0, 0);
        let x = j.run(&[vec![
            ev("a", 1, 5),
            ev("a", 2, 5),
            ev("a", 3, 1),
            ev("a", 4, 1),
        ]]);
        let r = &x.results["f"][0];
        assert_eq!((r["lo"].clone(), r["hi"].clone()), (json!(3), json!(2)));
    }

    /// The spec's chain rule: a merged session that absorbs a session which never fired
    /// itself, but had absorbed one that did, carries that revision on.
    #[test]
    fn session_revisions_never_go_backwards_along_a_chain_of_merges() {
        let j = job(Window::Session { gap: 300 }, 2000, 500);
        let x = j.run(&[vec![
            ev("a", 1, 1000), // A = [1000, 1300)
            ev("z", 0, 2000), // W = 1500: A fires rev 0
            ev("a", 2, 1250), // A' = [1000, 1550), unfired (1550 > W): A retracted
            ev("a", 3, 1700), // B = [1700, 2000)
            ev("a", 4, 1540), // [1540, 1840) bridges A' and B: C = [1000, 2000)
            ev("a", 5, 1600), // inside C: in place
            ev("z", 0, 9000), // W = 8500: C fires with revision 1 (via A'), z's
        ]]);
        let want: Vec<String> = [
            json!({"user":"a","window_start":1000,"window_end":1300,"n":1,"total":1,"lo":1,"hi":1,"revision":0}),
            json!({"user":"a","window_start":1000,"window_end":1300,"n":1,"total":1,"lo":1,"hi":1,"revision":0,"retracted":true}),
            json!({"user":"a","window_start":1000,"window_end":2000,"n":5,"total":15,"lo":1,"hi":3,"revision":1}),
            json!({"user":"z","window_start":2000,"window_end":2300,"n":1,"total":0,"lo":0,"hi":0,"revision":0}),
            json!({"user":"z","window_start":9000,"window_end":9300,"n":1,"total":0,"lo":0,"hi":0,"revision":0}),
        ]
        .iter()
        .map(canonical)
        .collect();
        assert_eq!(rows(&x), want);
        assert_eq!(x.stats.inherited_revisions, 1);
        assert_eq!(x.stats.bridges, 1);
        assert_eq!(x.stats.retractions, 1);
    }

    #[test]
    fn session_merge_after_firing_and_in_place_refire() {
        let j = job(Window::Session { gap: 5 }, 100, 0);
        let x = j.run(&[vec![
            ev("a", 1, 0),   // [0,5)
            ev("a", 2, 10),  // [10,15); W = 10: [0,5) fires rev 0
            ev("a", 3, 20),  // W = 20: [10,15) fires rev 0
            ev("a", 4, 5), // [5,10) bridges [0,5) and [10,15): both retracted; [0,15) rev 1 at once
            ev("a", 5, 3), // inside [0,15): in place, fires rev 2 at once
            ev("a", 6, 80), // [80,85)
            ev("a", 7, 300), // W = 300: everything up to 300 fires; far too late below
            ev("a", 8, 1),
        ]]);
        let r: Vec<(i64, i64, u64, bool)> = x.results["f"]
            .iter()
            .map(|r| {
                (
                    r["window_start"].as_i64().unwrap(),
                    r["window_end"].as_i64().unwrap(),
                    r["revision"].as_u64().unwrap(),
                    r.get("retracted").is_some(),
                )
            })
            .collect();
        assert_eq!(
            r,
            vec![
                (0, 5, 0, false),
                (10, 15, 0, false),
                (0, 5, 0, true),
                (10, 15, 0, true),
                (0, 15, 1, false),
                (0, 15, 2, false),
                (20, 25, 0, false),
                (80, 85, 0, false),
                (300, 305, 0, false),
            ]
        );
        assert_eq!(x.late["f"], vec![ev("a", 8, 1)]);
    }

    #[test]
    fn multisets_compare_regardless_of_key_order() {
        let a = vec![json!({"a":1,"b":[{"y":1,"x":2}]})];
        let b = vec![json!({"b":[{"x":2,"y":1}],"a":1})];
        assert_eq!(multiset(&a), multiset(&b));
        assert_eq!(report_multisets("rows", &multiset(&a), &multiset(&b)), "");
        assert!(!report_multisets("rows", &multiset(&a), &BTreeMap::new()).is_empty());
    }
}
