//! Bounded fuzzing on stable Rust of the three parsers that read untrusted text: the
//! reading/heartbeat payload, the MQTT topic, InfluxDB's annotated CSV.
//!
//! The coverage-guided campaigns run with cargo-fuzz and libFuzzer (`fuzz/`, nightly
//! Rust). This driver runs the very same checks (`fuzz/src/lib.rs`, included below) on
//! any machine, for a time budget, so that CI fuzzes on every run: it replays the
//! committed seed corpus (`fuzz/seeds/<target>/`, hand-written seeds and, in
//! `libfuzzer/`, the inputs that covered new code in campaigns; every file a
//! regression input), then
//! alternates inputs generated from each format's grammar (`generate`) with byte
//! mutations of inputs seen so far (`mutate`, using `fuzz/dict/<target>.dict`). With no
//! coverage instrumentation on stable, an input joins the mutation pool when its
//! outcome (accepted, or the error's reason and message shape) is still rare.
//!
//! Environment: `ARNG_FUZZ_SECONDS` (budget per target, default 3; scripts/test.sh
//! sets more), `ARNG_FUZZ_SEED` (replay a run's exact sequence; printed by every run).
//! A panic or broken invariant fails the test after writing the input, and a shrunk
//! copy, under `target/tmp/fuzz-failures/` and printing them.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

mod generate;
mod mutate;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use mutate::Rng;

/// Budget per target when `ARNG_FUZZ_SECONDS` is unset: a smoke run inside a plain
/// `cargo test`; the fuzz step of scripts/test.sh gives each target more.
const DEFAULT_SECONDS: f64 = 3.0;
/// Longest input tried: twice the payload size limit, so that both sides of it are hit.
const MAX_LEN: usize = 8192;
/// An input whose outcome has been seen fewer times than this joins the pool.
const KEEP_PER_OUTCOME: u32 = 16;
/// Inputs kept for mutation besides the seeds.
const MAX_POOL: usize = 4096;
/// Attempts spent shrinking a failing input before reporting it.
const SHRINK_ATTEMPTS: usize = 4000;

#[test]
fn payload() {
    campaign("payload", generate::payload);
}

#[test]
fn topic() {
    campaign("topic", generate::topic);
}

#[test]
fn annotated_csv() {
    campaign("annotated_csv", generate::annotated_csv);
}

/// Fuzzes one target for its budget; panics (failing the test) on the first failure.
fn campaign(name: &str, generate: fn(&mut Rng) -> Vec<u8>) {
    let check = targets::TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no fuzz target {name} in fuzz/src/lib.rs"))
        .1;
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let seeds = read_seeds(&fuzz_dir.join("seeds").join(name));
    let dict_path = fuzz_dir.join("dict").join(format!("{name}.dict"));
    let dict_text = std::fs::read_to_string(&dict_path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dict_path.display()));
    let dict =
        mutate::parse_dict(&dict_text).unwrap_or_else(|e| panic!("{}: {e}", dict_path.display()));
    let budget = budget();
    let seed = rng_seed(name);
    let mut rng = Rng::new(seed);

    let mut pool = seeds.clone();
    let mut outcomes: HashMap<String, u32> = HashMap::new();
    let mut executions = 0u64;
    let mut slowest = (Duration::ZERO, Vec::new());
    let mut failure = None;
    let start = Instant::now();
    // Every seed first: the committed corpus is the regression suite.
    let mut replay = seeds.iter();
    loop {
        let input = match replay.next() {
            Some(seed_input) => seed_input.clone(),
            None => {
                if executions.is_multiple_of(64) && start.elapsed() >= budget {
                    break;
                }
                if rng.one_in(4) {
                    let mut input = generate(&mut rng);
                    input.truncate(MAX_LEN);
                    input
                } else {
                    let base = &pool[rng.below(pool.len())];
                    mutate::mutate(&mut rng, base, &pool, &dict, MAX_LEN)
                }
            }
        };
        let t0 = Instant::now();
        let result = run_one(check, &input);
        let took = t0.elapsed();
        if took > slowest.0 {
            slowest = (took, input.clone());
        }
        executions += 1;
        match result {
            Ok(label) => {
                let seen = outcomes.entry(label).or_insert(0);
                *seen += 1;
                if *seen <= KEEP_PER_OUTCOME {
                    if pool.len() < seeds.len() + MAX_POOL {
                        pool.push(input);
                    } else {
                        // Seeds stay; a random later input makes room.
                        let i = seeds.len() + rng.below(MAX_POOL);
                        pool[i] = input;
                    }
                }
            }
            Err(message) => {
                failure = Some(report_failure(name, check, &input, &message));
                break;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Timed again on its own: one slow execution may be the machine, not the input.
    let slowest_again = (0..3)
        .map(|_| {
            let t0 = Instant::now();
            let _ = run_one(check, &slowest.1);
            t0.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "fuzz {name}: {executions} executions in {elapsed:.1} s ({:.0}/s), {} failures; \
         {} seeds replayed, pool {}, {} distinct outcomes, slowest input {} bytes in {:.2} ms \
         ({:.2} ms timed again), ARNG_FUZZ_SEED={seed:#x}",
        executions as f64 / elapsed.max(1e-9),
        usize::from(failure.is_some()),
        seeds.len(),
        pool.len(),
        outcomes.len(),
        slowest.1.len(),
        slowest.0.as_secs_f64() * 1e3,
        slowest_again.as_secs_f64() * 1e3,
    );
    if let Some(failure) = failure {
        panic!("fuzz {name}: failure after {executions} executions\n{failure}");
    }
}

/// Every file under `dir`, subfolders included (`libfuzzer/` holds what campaigns
/// found), as libFuzzer reads a corpus.
fn read_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| {
            panic!(
                "cannot read the seed corpus {}: {e} (the campaign must not start from nothing)",
                d.display()
            )
        });
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                paths.push(path);
            }
        }
    }
    // Sorted, so that a seeded run replays the same sequence on any file system.
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!seeds.is_empty(), "no seed inputs in {}", dir.display());
    seeds
}

fn budget() -> Duration {
    match std::env::var("ARNG_FUZZ_SECONDS") {
        Err(_) => Duration::from_secs_f64(DEFAULT_SECONDS),
        Ok(s) => s
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or_else(|| panic!("ARNG_FUZZ_SECONDS={s:?} is not a number of seconds")),
    }
}

/// `ARNG_FUZZ_SEED` if set (decimal or 0x-hex), else the clock; mixed with the target
/// name so that targets fuzzed in parallel do not walk in step.
fn rng_seed(name: &str) -> u64 {
    let base = match std::env::var("ARNG_FUZZ_SEED") {
        Ok(s) => {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            return parsed
                .unwrap_or_else(|_| panic!("ARNG_FUZZ_SEED={s:?} is not a 64-bit number"));
        }
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    name.bytes().fold(base, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

thread_local! {
    /// Set while this thread runs a fuzz input: its panics are caught and reported by
    /// the campaign, not printed by the default hook.
    static FUZZING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs one input: its outcome label, or the panic's message and location.
fn run_one(check: targets::Check, input: &[u8]) -> Result<String, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if FUZZING.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                default(info);
            }
        }));
    });
    FUZZING.with(|f| f.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(|| check(input)));
    FUZZING.with(|f| f.set(false));
    result.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panicked (no message)".into())
    })
}

/// Writes the failing input and a shrunk copy to files and describes them.
fn report_failure(name: &str, check: targets::Check, input: &[u8], message: &str) -> String {
    let first_line = |m: &str| m.lines().next().unwrap_or("").to_owned();
    let wanted = first_line(message);
    let shrunk = shrink(
        input,
        |candidate| matches!(run_one(check, candidate), Err(m) if first_line(&m) == wanted),
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).unwrap();
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let path = dir.join(format!("{name}-{hash:016x}"));
    let shrunk_path = dir.join(format!("{name}-{hash:016x}-shrunk"));
    std::fs::write(&path, input).unwrap();
    std::fs::write(&shrunk_path, &shrunk).unwrap();
    let shown = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        let cut: String = text.chars().take(2000).collect();
        format!("{} bytes: {cut:?}", b.len())
    };
    format!(
        "{message}\ninput ({}) {}\nshrunk ({}) {}\n\
         To keep it as a regression input: cp {} fuzz/seeds/{name}/ \
         (every seed is replayed first; libFuzzer replays it too: \
         cargo +nightly fuzz run {name} {})",
        path.display(),
        shown(input),
        shrunk_path.display(),
        shown(&shrunk),
        shrunk_path.display(),
        shrunk_path.display(),
    )
}

/// Removes ever smaller pieces of `input` while `still_fails` holds.
fn shrink(input: &[u8], mut still_fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut chunk = (best.len() / 2).max(1);
    let mut attempts = 0;
    while attempts < SHRINK_ATTEMPTS && !best.is_empty() {
        let mut i = 0;
        let mut shrank = false;
        while i + chunk <= best.len() && attempts < SHRINK_ATTEMPTS {
            let mut candidate = best.clone();
            candidate.drain(i..i + chunk);
            attempts += 1;
            if still_fails(&candidate) {
                best = candidate;
                shrank = true;
            } else {
                i += chunk;
            }
        }
        if !shrank {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    best
}

#[test]
fn shrinking_keeps_what_fails() {
    let shrunk = shrink(b"xxxxxaxxxbxxxxx", |c| {
        c.contains(&b'a') && c.contains(&b'b')
    });
    assert_eq!(shrunk, b"ab");
}
