//! Coverage feedback on the stable toolchain: a binary built with
//! `RUSTFLAGS="-C instrument-coverage"` keeps one 64-bit counter per code region in the
//! ELF section `__llvm_prf_cnts`, which the linker brackets with `__start_` and
//! `__stop_` symbols. After each input the fuzz loop reads the counters, turns each
//! nonzero one into a hit-count bucket (1, 2, 3, 4-7, 8-15, 16-31, 32-127, 128+, as
//! AFL does), notes the (counter, bucket) pairs never seen before, and zeroes it.
//! Without the `coverage` feature there are no counters and nothing is new.

/// The (counter, bucket) pairs seen so far.
pub struct Coverage {
    seen: Vec<u8>,
}

#[cfg(feature = "coverage")]
mod counters {
    unsafe extern "C" {
        static __start___llvm_prf_cnts: u8;
        static __stop___llvm_prf_cnts: u8;
    }

    /// The counters of the whole binary.
    #[allow(clippy::mut_from_ref)]
    pub fn all() -> &'static mut [u64] {
        // SAFETY: the linker defines both symbols around the counters section, which
        // holds u64 counters (aligned); the fuzz loop is the only reader and writer
        // besides the instrumented code on the same thread.
        unsafe {
            let start = &raw const __start___llvm_prf_cnts as *mut u64;
            let stop = &raw const __stop___llvm_prf_cnts as *const u64;
            let n = usize::try_from(stop.offset_from(start)).unwrap_or(0);
            std::slice::from_raw_parts_mut(start, n)
        }
    }
}

#[cfg(not(feature = "coverage"))]
mod counters {
    pub fn all() -> &'static mut [u64] {
        &mut []
    }
}

fn bucket(hits: u64) -> u8 {
    match hits {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 4,
        4..=7 => 8,
        8..=15 => 16,
        16..=31 => 32,
        32..=127 => 64,
        _ => 128,
    }
}

impl Coverage {
    pub fn new() -> Self {
        let c = counters::all();
        c.fill(0);
        Coverage {
            seen: vec![0; c.len()],
        }
    }

    /// Whether this build counts (the `coverage` feature, an instrumented build).
    pub fn enabled(&self) -> bool {
        !self.seen.is_empty()
    }

    /// The number of counters, and of those ever reached.
    pub fn reached(&self) -> (usize, usize) {
        (
            self.seen.len(),
            self.seen.iter().filter(|&&b| b != 0).count(),
        )
    }

    /// Forgets what ran since the last call (seeds loading, set-up).
    pub fn reset(&mut self) {
        counters::all().fill(0);
    }

    /// The (counter, bucket) pairs the input just run reached for the first time;
    /// zeroes the counters for the next one.
    pub fn take_new(&mut self) -> usize {
        let mut new = 0;
        for (c, seen) in counters::all().iter_mut().zip(self.seen.iter_mut()) {
            if *c != 0 {
                let b = bucket(*c);
                if *seen & b == 0 {
                    *seen |= b;
                    new += 1;
                }
                *c = 0;
            }
        }
        new
    }
}

impl Default for Coverage {
    fn default() -> Self {
        Coverage::new()
    }
}
