//! Building Flux queries safely.
//!
//! InfluxDB OSS 2.x has no query parameters, so every value that goes into a Flux
//! query is put there as a literal by this module. Names (zones, sensors) are already
//! restricted to a safe character set by [`crate::domain::names`]; this module adds a
//! second wall: [`string`] escapes whatever it is given, and [`duration`] only emits
//! digits and a unit. Query builders take typed values, never raw strings.

use std::time::Duration;

/// A Flux string literal (with its quotes) whose content is exactly `s`.
///
/// Escapes `\`, `"`, newlines, and `${` (which would start an interpolation).
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Flux duration literal such as `90s` or `1500ms`, from a positive duration.
/// Sub-millisecond parts are rounded up so that a range never becomes empty.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes() {
        assert_eq!(string("nord"), r#""nord""#);
        assert_eq!(string(r#"nord") |> drop("#), r#""nord\") |> drop(""#);
        assert_eq!(string(r"a\b"), r#""a\\b""#);
        assert_eq!(string("${secret}"), r#""\${secret}""#);
        assert_eq!(string("cost $5"), r#""cost $5""#);
        assert_eq!(string("a\nb"), r#""a\nb""#);
    }

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_secs(3600)), "3600s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration(Duration::ZERO), "1ms");
    }

    proptest! {
        /// The literal never ends early: after the opening quote, every `"` is escaped
        /// and no unescaped `${` appears.
        #[test]
        fn literal_is_closed(s in "\\PC{0,40}") {
            let lit = string(&s);
            let inner = &lit[1..lit.len() - 1];
            let mut escaped = false;
            let mut prev_dollar = false;
            for c in inner.chars() {
                if escaped { escaped = false; prev_dollar = false; continue; }
                match c {
                    '\\' => escaped = true,
                    '"' => prop_assert!(false, "unescaped quote in {}", lit),
                    '{' => prop_assert!(!prev_dollar, "interpolation in {}", lit),
                    _ => {}
                }
                prev_dollar = c == '$';
            }
            prop_assert!(!escaped);
        }
    }
}
