//! The byte-level half of the stable driver: a small seeded PRNG, the libFuzzer/AFL
//! dictionary format (so both drivers read the same `fuzz/dict/*.dict`), and the
//! mutations libFuzzer also applies (bit flips, special bytes, erasing, inserting,
//! repeating and splicing pieces, dictionary tokens, numbers swapped for edge values).

/// SplitMix64: tiny, fast, good enough to pick mutations, and reproducible from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Small numbers more often than large ones, as in libFuzzer's mutation depth.
    pub fn small(&mut self, max: usize) -> usize {
        let bits = self.below(usize::BITS as usize - max.leading_zeros() as usize + 1);
        (self.next_u64() as usize & ((1usize << bits) - 1)).min(max)
    }
}

/// Reads a libFuzzer/AFL dictionary: one `"token"` (optionally `name="token"`) a line,
/// `\\`, `\"` and `\xNN` escapes, `#` comments.
pub fn parse_dict(text: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("line {}: {line:?} is not a \"token\"", n + 1);
        let start = line.find('"').ok_or_else(bad)?;
        let quoted = &line.as_bytes()[start + 1..];
        let (last, body) = quoted.split_last().ok_or_else(bad)?;
        if *last != b'"' {
            return Err(bad());
        }
        let mut token = Vec::new();
        let mut i = 0;
        while i < body.len() {
            match (body[i], body.get(i + 1)) {
                (b'\\', Some(b'\\' | b'"')) => {
                    token.push(body[i + 1]);
                    i += 2;
                }
                (b'\\', Some(b'x')) => {
                    let hex = body.get(i + 2..i + 4).ok_or_else(bad)?;
                    let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                    token.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                    i += 4;
                }
                (b, _) => {
                    token.push(b);
                    i += 1;
                }
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

/// Bytes that are syntax in at least one of the three formats.
const SPECIAL: &[u8] = b"\0\x7f\xff\"\\,{}[]:/+#$\n\r\t -.eE0123456789";

/// Numbers at the edges of what the parsers check or convert.
const EDGE_NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "59",
    "-60",
    "-60.0000001",
    "100",
    "100.0000001",
    "99.995",
    "0.005",
    "255",
    "256",
    "65536",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "1e15",
    "1e308",
    "1e309",
    "5e-324",
    "2.2250738585072014e-308",
    "946684800",
    "946684799.9995",
    "4102444800",
    "4102444799.9995",
    "1795850102.125",
    "9999",
    "10000",
];

/// Applies one to a few stacked mutations to `input`; `pool` supplies splice material.
pub fn mutate(
    rng: &mut Rng,
    input: &[u8],
    pool: &[Vec<u8>],
    dict: &[Vec<u8>],
    max_len: usize,
) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.small(7) {
        mutate_once(rng, &mut data, pool, dict);
        if data.len() > max_len {
            data.truncate(max_len);
        }
    }
    data
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[Vec<u8>]) {
    let at = |rng: &mut Rng, data: &Vec<u8>| rng.below(data.len() + 1);
    match rng.below(11) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = *rng.pick(SPECIAL);
        }
        2 if !data.is_empty() => {
            let start = rng.below(data.len());
            let len = 1 + rng.small(data.len() - start - 1);
            data.drain(start..start + len);
        }
        3 => {
            let i = at(rng, data);
            let n = 1 + rng.small(7);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(i..i, bytes);
        }
        4 if !data.is_empty() => {
            // Repeat a piece elsewhere (nested structures, repeated rows and keys).
            let start = rng.below(data.len());
            let len = 1 + rng.small(data.len() - start - 1);
            let piece = data[start..start + len].to_vec();
            let i = at(rng, data);
            data.splice(i..i, piece);
        }
        5 | 6 if !dict.is_empty() => {
            let token = rng.pick(dict).clone();
            let i = at(rng, data);
            if rng.one_in(2) && i + token.len() <= data.len() {
                data[i..i + token.len()].copy_from_slice(&token);
            } else {
                data.splice(i..i, token);
            }
        }
        7 if !pool.is_empty() => {
            // Splice: our head, another input's tail.
            let other = rng.pick(pool);
            let cut = at(rng, data);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 => {
            // Swap a run of digits for an edge number.
            let digits: Vec<usize> = (0..data.len())
                .filter(|&i| data[i].is_ascii_digit())
                .collect();
            let edge = rng.pick(EDGE_NUMBERS).as_bytes().to_vec();
            if digits.is_empty() {
                let i = at(rng, data);
                data.splice(i..i, edge);
            } else {
                let start = *rng.pick(&digits);
                let end = (start..data.len())
                    .find(|&i| !data[i].is_ascii_digit())
                    .unwrap_or(data.len());
                data.splice(start..end, edge);
            }
        }
        9 if data.len() > 1 => {
            let cut = rng.below(data.len());
            data.truncate(cut);
        }
        _ => {
            let i = at(rng, data);
            data.insert(i, *rng.pick(SPECIAL));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dictionary_escapes() {
        let dict = parse_dict("# c\n\"a\\\"b\"\nname=\"\\x0d\\x0a\"\n\n\"\\\\\"\n").unwrap();
        assert_eq!(dict, [b"a\"b".to_vec(), b"\r\n".to_vec(), b"\\".to_vec()]);
        assert!(parse_dict("token\n").is_err());
    }

    #[test]
    fn mutations_stay_within_the_length_limit() {
        let mut rng = Rng::new(7);
        let pool = vec![b"entrepot/nord/s1/v1".to_vec()];
        for _ in 0..10_000 {
            let m = mutate(&mut rng, &pool[0], &pool, &[b"xyz".to_vec()], 24);
            assert!(m.len() <= 24);
        }
    }
}
