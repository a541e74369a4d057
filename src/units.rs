//! Values people type with a unit on the command line and in the environment:
//! durations (`500ms`, `5s`, `1m`, humantime's syntax) and byte sizes (`256MiB`).
//! The one place these parsers live, so every option of every command reads them
//! alike and says the expected syntax when it cannot.

use std::time::Duration;

/// A duration, zero allowed (`0s`, `200ms`, `5m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 200ms, 5s, 1m)"))
}

/// A duration longer than zero (`200ms`, `5s`, `1m`, `1h 30m`).
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A size in bytes above zero: `123`, `64KiB`, `256MiB`, `2GiB` (also KB/MB/GB as
/// powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 256MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        u => {
            return Err(format!(
                "unknown unit {u:?} (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let v = n.checked_mul(mult).ok_or("size too large")?;
    if v == 0 {
        return Err("must be greater than zero".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_positive_duration("200ms"),
            Ok(Duration::from_millis(200))
        );
        assert_eq!(parse_positive_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_positive_duration("0s")
            .unwrap_err()
            .contains("greater than zero"));
        assert!(parse_positive_duration("soon")
            .unwrap_err()
            .contains("expected e.g."));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }
}
