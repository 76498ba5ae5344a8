//! Mutations of byte strings: generic ones (bit flips, inserted, deleted, duplicated
//! and spliced ranges, interesting bytes) and ones that know the shape of the input
//! (lines and indentation for YAML, tokens such as numbers, durations, names and
//! quoted strings), each with dictionaries of values that tend to find edges.

/// A small, fast, seedable generator (xorshift64*): a run is replayed by its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Inputs are kept below this size.
pub const MAX_LEN: usize = 64 * 1024;

const BYTES: &[u8] = b"\x00\x01\x7f\x80\xff\xfe\xef\xbb\xbf\t\n\r \"'\\{}[]:,-#&*!|>?%@`";

/// One generic mutation of `data`, with `other` (another corpus entry) for splicing.
pub fn bytes(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let len = data.len();
    match rng.below(9) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(len + 1);
            data.insert(i, *rng.pick(BYTES));
        }
        2 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(32));
            data.drain(i..i + n);
        }
        3 if len > 0 => {
            let i = rng.below(len);
            let n = 1 + rng.below((len - i).min(64));
            let chunk: Vec<u8> = data[i..i + n].to_vec();
            let at = rng.below(len + 1);
            let times = if rng.chance(8) { 1 + rng.below(200) } else { 1 };
            for _ in 0..times {
                data.splice(at..at, chunk.iter().copied());
            }
        }
        4 if !other.is_empty() => {
            let i = rng.below(other.len());
            let n = 1 + rng.below((other.len() - i).min(256));
            let at = rng.below(len + 1);
            data.splice(at..at, other[i..i + n].iter().copied());
        }
        5 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(BYTES);
        }
        6 => {
            // Truncate.
            if len > 0 {
                data.truncate(rng.below(len));
            }
        }
        7 => {
            // A run of one byte (deep nesting, long tokens).
            let at = rng.below(len + 1);
            let b = *rng.pick(b"[{(-!\"a9 ");
            let most = if rng.chance(4) { 5000 } else { 64 };
            let n = 1 + rng.below(most);
            data.splice(at..at, std::iter::repeat_n(b, n));
        }
        _ => {
            let i = rng.below(len + 1);
            let s = rng.pick(UTF8_EDGES).as_bytes();
            data.splice(i..i, s.iter().copied());
        }
    }
    data.truncate(MAX_LEN);
}

const UTF8_EDGES: &[&str] = &[
    "é", "😀", "\u{feff}", "\u{200b}", "\u{0}", "\u{2028}", "ǅ", "\u{fffd}",
];

/// Token spans of `data`: runs of word characters (letters, digits, `_`, `.`), and
/// quoted strings.
fn tokens(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let b = data[i];
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-' {
            let s = i;
            while i < data.len()
                && (data[i].is_ascii_alphanumeric() || matches!(data[i], b'_' | b'.' | b'-'))
            {
                i += 1;
            }
            out.push((s, i));
        } else if b == b'"' || b == b'\'' {
            let s = i;
            i += 1;
            while i < data.len() && data[i] != b && data[i] != b'\n' {
                i += 1;
            }
            i = (i + 1).min(data.len());
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// Replaces one token with a value from `dict`, or with another token of the input
/// (which makes names collide and references dangle).
pub fn token(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&str]) {
    let toks = tokens(data);
    if toks.is_empty() {
        return;
    }
    let (s, e) = *rng.pick(&toks);
    let with: Vec<u8> = if rng.chance(3) {
        let (a, b) = *rng.pick(&toks);
        data[a..b].to_vec()
    } else {
        rng.pick(dict).as_bytes().to_vec()
    };
    data.splice(s..e, with);
    data.truncate(MAX_LEN);
}

/// Line-level edits of YAML: delete, duplicate, move a line, change its indentation
/// (spaces or a tab), or insert a line of YAML from the dictionary.
pub fn lines(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&str]) {
    let mut ls: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = ls.len();
    let i = rng.below(n);
    match rng.below(6) {
        0 if n > 1 => {
            ls.remove(i);
        }
        1 => {
            let l = ls[i].clone();
            ls.insert(i, l);
        }
        2 if n > 1 => {
            let l = ls.remove(i);
            let j = rng.below(ls.len() + 1);
            ls.insert(j, l);
        }
        3 => {
            const INDENTS: [&[u8]; 4] = [b" ", b"  ", b"\t", b"    "];
            let indent = *rng.pick(&INDENTS);
            ls[i].splice(0..0, indent.iter().copied());
        }
        4 => {
            let strip = ls[i].iter().take_while(|&&b| b == b' ').count().min(2);
            ls[i].drain(..strip);
        }
        _ => {
            let indent = ls[i].iter().take_while(|&&b| b == b' ').count();
            let mut l = vec![b' '; indent];
            l.extend_from_slice(rng.pick(dict).as_bytes());
            ls.insert(i, l);
        }
    }
    *data = ls.join(&b'\n');
    data.truncate(MAX_LEN);
}
