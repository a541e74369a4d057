//! Zone and sensor names.
//!
//! Names travel into MQTT topics, InfluxDB tags and Flux queries, so they are held to a
//! strict rule rather than escaped at every use: 1 to 32 characters from lowercase ASCII
//! letters, digits, `_` and `-`, starting with a letter or a digit. Nothing in that set
//! is special in a topic (`+`, `#`, `/`), in line protocol (`,`, `=`, space) or in a
//! Flux string (`"`, `\`, `${`). A few words are reserved for zones because they name
//! topic branches of their own (`entrepot/heartbeat/...`, `entrepot/alerts/...`).

use std::fmt;

/// Longest accepted zone or sensor name, in bytes (ASCII only, so also characters).
pub const MAX_NAME_LEN: usize = 32;

/// Zone names that would collide with the non-reading branches of the topic tree.
pub const RESERVED_ZONES: &[&str] = &["heartbeat", "alerts", "status", "config", "deadletter"];

/// Why a name was refused. The offending value is kept (shortened and escaped for
/// display) so an error message can show it without echoing a megabyte of input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name {shown}: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    pub shown: String,
    pub reason: String,
}

fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(40).collect();
    if value.chars().count() > 40 {
        s.push('…');
    }
    format!("{s:?}")
}

/// Checks `value` against the naming rule; `kind` is "zone" or "sensor" in messages.
pub fn validate_name(kind: &'static str, value: &str) -> Result<(), NameError> {
    let err = |reason: String| NameError {
        kind,
        shown: shown(value),
        reason,
    };
    if value.is_empty() {
        return Err(err("must not be empty".into()));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(err(format!(
            "must be at most {MAX_NAME_LEN} characters (got {})",
            value.chars().count()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
    {
        return Err(err(format!(
            "character {c:?} is not allowed (use lowercase a-z, 0-9, '_' and '-')"
        )));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err("must start with a letter or a digit".into()));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: &str) -> Result<Self, NameError> {
                validate_name($kind, value)?;
                let extra: fn(&str) -> Result<(), NameError> = $extra;
                extra(value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A warehouse zone such as `nord`, `sud` or `est`.
    Zone,
    "zone",
    |v| {
        if RESERVED_ZONES.contains(&v) {
            Err(NameError {
                kind: "zone",
                shown: shown(v),
                reason: format!("is reserved (reserved names: {})", RESERVED_ZONES.join(", ")),
            })
        } else {
            Ok(())
        }
    }
);

name_type!(
    /// A sensor (the lab's "capteur") inside a zone, such as `s1` or `temp-03`.
    SensorId,
    "sensor",
    |_| Ok(())
);

/// Parses a comma-separated zone list such as `nord,sud,est` (spaces around names are
/// tolerated, duplicates and empty lists are not).
pub fn parse_zone_list(s: &str) -> Result<Vec<Zone>, String> {
    let mut zones: Vec<Zone> = Vec::new();
    for part in s.split(',').map(str::trim) {
        let zone = Zone::new(part).map_err(|e| e.to_string())?;
        if zones.contains(&zone) {
            return Err(format!("zone {zone:?} is listed twice"));
        }
        zones.push(zone);
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_lab_names() {
        for z in ["nord", "sud", "est", "zone-1", "z_2", "0a"] {
            assert_eq!(Zone::new(z).unwrap().as_str(), z);
        }
        assert!(SensorId::new("temp-03").is_ok());
    }

    #[test]
    fn rejects_bad_names_with_reason() {
        let cases = [
            ("", "must not be empty"),
            ("Nord", "character 'N'"),
            ("nord\") |> drop(", "character '\"'"),
            ("nörd", "character 'ö'"),
            ("a/b", "character '/'"),
            ("a+", "character '+'"),
            ("#", "character '#'"),
            ("-x", "must start"),
            ("a b", "character ' '"),
            ("${x}", "character '$'"),
        ];
        for (input, want) in cases {
            let err = Zone::new(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
        let long = "a".repeat(33);
        assert!(Zone::new(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 32"));
        assert!(Zone::new(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn reserved_zone_names() {
        let err = Zone::new("heartbeat").unwrap_err().to_string();
        assert!(err.contains("reserved"), "{err}");
        // Reserved words are fine as sensor names: they never form a topic branch.
        assert!(SensorId::new("status").is_ok());
    }

    #[test]
    fn zone_list() {
        let zones = parse_zone_list("nord, sud,est").unwrap();
        assert_eq!(zones.len(), 3);
        assert!(parse_zone_list("").unwrap_err().contains("empty"));
        assert!(parse_zone_list("nord,,sud").unwrap_err().contains("empty"));
        assert!(parse_zone_list("nord,nord").unwrap_err().contains("twice"));
    }

    #[test]
    fn error_display_is_bounded() {
        let huge = "X".repeat(10_000);
        assert!(Zone::new(&huge).unwrap_err().to_string().len() < 200);
    }

    proptest! {
        #[test]
        fn accepted_names_are_safe_everywhere(s in "\\PC{0,40}") {
            if let Ok(z) = Zone::new(&s) {
                for bad in ['/', '+', '#', ',', '=', ' ', '"', '\\', '$', '\n'] {
                    prop_assert!(!z.as_str().contains(bad));
                }
                prop_assert!(z.as_str().len() <= MAX_NAME_LEN);
            }
        }
    }
}
