//! Stamps the binary with the git commit and the build date for `arng --version`
//! (src/help.rs reads `ARNG_GIT_COMMIT` and `ARNG_BUILD_DATE`).
//!
//! It must build everywhere the sources go: a clone, a worktree, a tarball without
//! `.git`, the Docker build (whose context excludes `.git/`). Without git the commit
//! is `ARNG_GIT_COMMIT` from the environment (the Dockerfile passes it as a build
//! argument), else `unknown`. Cargo reruns this script only when HEAD moves (the
//! `.git/HEAD` file and the ref it points to) or when the variables below change,
//! not on every source edit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=ARNG_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");

    let from_env = std::env::var("ARNG_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric()));
    let commit = from_env
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ARNG_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=ARNG_BUILD_DATE={}", build_date());
}

/// `git` with the manifest directory as working directory; `None` when git is
/// missing, this is no repository, or the command fails.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    out.status.success().then(|| text.trim().to_owned())
}

/// The short commit of HEAD, and the files whose change means HEAD moved.
fn git_commit() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    // In a worktree `.git` is a file: ask git where HEAD and the ref really are.
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(head) = git(&["rev-parse", "--git-path", "HEAD"]) {
        watched.push(absolute(&head));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(r) = git(&["rev-parse", "--git-path", &branch]) {
            watched.push(absolute(&r));
        }
        // A ref may be packed (after `git gc`) instead of a file of its own.
        if let Some(p) = git(&["rev-parse", "--git-path", "packed-refs"]) {
            watched.push(absolute(&p));
        }
    }
    // A path that does not exist would make cargo rerun this script on every build.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    Some(commit)
}

fn absolute(path: &str) -> PathBuf {
    let p = Path::new(path);
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) if p.is_relative() => Path::new(&dir).join(p),
        _ => p.to_owned(),
    }
}

/// Today (UTC) as `YYYY-MM-DD`, or the day of `SOURCE_DATE_EPOCH`.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`), so that this script needs no dependency.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
