//! The test-only fault hook: `STREAMC_FAULT=<point>@<n>[,<point>@<n>...]` makes the
//! process kill itself with SIGKILL the n-th time (1-based) it reaches `<point>`, so
//! that crash tests reach every phase of a checkpoint and of the commit
//! (`docs/design/state.md` lists the points). Unset (every real deployment), a check is
//! one branch on an empty list.

/// The environment variable.
pub const FAULT_ENV: &str = "STREAMC_FAULT";

/// The points the driver reaches.
pub const POINTS: [&str; 8] = [
    "record",
    "checkpoint.start",
    "checkpoint.blobs",
    "checkpoint.manifest",
    "checkpoint.offsets",
    "checkpoint.commit",
    "restore",
    "commit",
];

/// The armed points and how often each was reached.
#[derive(Debug, Default)]
pub(super) struct Faults {
    armed: Vec<(&'static str, u64, u64)>,
}

impl Faults {
    /// From `STREAMC_FAULT`; a malformed entry or an unknown point is a usage error (a
    /// test that misspells a point must not pass without a crash).
    pub(super) fn from_env() -> Result<Self, String> {
        let Ok(v) = std::env::var(FAULT_ENV) else {
            return Ok(Faults::default());
        };
        let mut armed = Vec::new();
        for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('@').and_then(|(point, n)| {
                let point = POINTS.iter().copied().find(|p| *p == point)?;
                let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
                Some((point, n, 0))
            });
            match parsed {
                Some(a) => armed.push(a),
                None => {
                    return Err(format!(
                        "{FAULT_ENV}={v:?}: expected POINT@N[,POINT@N...] with N >= 1 and POINT one of {}",
                        POINTS.join(", ")
                    ));
                }
            }
        }
        Ok(Faults { armed })
    }

    /// Whether any point is armed (the record point is checked per record only then).
    pub(super) fn any(&self) -> bool {
        !self.armed.is_empty()
    }

    /// Reaches `point`: SIGKILL if it is its n-th time.
    pub(super) fn reach(&mut self, point: &'static str) {
        for (p, n, seen) in &mut self.armed {
            if *p == point {
                *seen += 1;
                if *seen == *n {
                    tracing::warn!(point, n = *n, "{FAULT_ENV}: killing the process");
                    let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
                    // (Not reached: SIGKILL cannot be caught.)
                    std::process::abort();
                }
            }
        }
    }
}
