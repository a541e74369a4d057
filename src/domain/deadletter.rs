//! The dead-letter record ingest publishes on `entrepot/deadletter/<reason>` for every
//! message it refuses, so that `mosquitto_sub -t 'entrepot/deadletter/#' -v` tells a
//! student at once why a message went nowhere.
//!
//! ```json
//! {"error":"field \"temp\" is missing","field":"temp","instance":"arng-ingest",
//!  "payload":"{\"hum\":44.0}","payload_bytes":12,"payload_truncated":false,
//!  "reason":"missing_field","received_at":"2026-11-28T09:15:02.125Z",
//!  "topic":"entrepot/nord/temp/v1","version":1}
//! ```
//!
//! Bounded whatever the input: the payload copy is cut to [`MAX_PAYLOAD_COPY_BYTES`]
//! (on a character boundary), the error to [`MAX_ERROR_CHARS`] characters and the topic
//! to [`MAX_TOPIC_CHARS`], so a record stays under 2 KiB. The full payload (4096
//! characters) is kept in the `deadletters` measurement. Pure.

use chrono::{DateTime, Utc};

use super::payload::format_timestamp;

/// Longest payload copy in a published dead letter, in bytes.
pub const MAX_PAYLOAD_COPY_BYTES: usize = 512;
/// Longest error message in a published dead letter, in characters.
pub const MAX_ERROR_CHARS: usize = 300;
/// Longest original topic in a published dead letter, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;

/// A refused message, as published on the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter<'a> {
    /// The stable reason label (`missing_field`, `future_timestamp`, ...).
    pub reason: &'a str,
    /// The payload field at fault, when one is.
    pub field: Option<&'a str>,
    /// What is wrong, in words.
    pub error: &'a str,
    /// The topic the message was published on.
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// The ingest process that refused it (its MQTT client id).
    pub instance: &'a str,
    pub received_at: DateTime<Utc>,
}

/// The longest prefix of `s` that fits in `max` bytes without splitting a character.
fn cut_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

impl DeadLetter<'_> {
    /// The JSON published on `entrepot/deadletter/<reason>`.
    pub fn to_json(&self) -> String {
        let text = String::from_utf8_lossy(self.payload);
        let copy = cut_bytes(&text, MAX_PAYLOAD_COPY_BYTES);
        serde_json::json!({
            "version": 1,
            "reason": self.reason,
            "field": self.field,
            "error": cut_chars(self.error, MAX_ERROR_CHARS),
            "topic": cut_chars(self.topic, MAX_TOPIC_CHARS),
            "payload": copy,
            "payload_bytes": self.payload.len(),
            "payload_truncated": copy.len() < text.len(),
            "instance": self.instance,
            "received_at": format_timestamp(self.received_at),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn letter<'a>(payload: &'a [u8], error: &'a str) -> DeadLetter<'a> {
        DeadLetter {
            reason: "missing_field",
            field: Some("temp"),
            error,
            topic: "entrepot/nord/temp/v1",
            payload,
            instance: "arng-ingest",
            received_at: DateTime::from_timestamp_millis(1_795_857_302_125).unwrap(),
        }
    }

    #[test]
    fn says_what_and_why() {
        let json = letter(br#"{"hum":44.0}"#, "field \"temp\" is missing").to_json();
        let v: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["reason"], "missing_field");
        assert_eq!(v["field"], "temp");
        assert_eq!(v["error"], "field \"temp\" is missing");
        assert_eq!(v["topic"], "entrepot/nord/temp/v1");
        assert_eq!(v["payload"], r#"{"hum":44.0}"#);
        assert_eq!(v["payload_bytes"], 12);
        assert_eq!(v["payload_truncated"], false);
        assert_eq!(v["received_at"], "2026-11-28T09:15:02.125Z");
        let mut no_field = letter(b"{", "payload is not valid JSON");
        no_field.field = None;
        let v: Value = serde_json::from_str(&no_field.to_json()).unwrap();
        assert_eq!(v["field"], Value::Null);
    }

    #[test]
    fn stays_bounded_whatever_the_input() {
        // 3-byte characters across the cut, an invalid UTF-8 byte, a huge error.
        let mut payload = "€".repeat(1000).into_bytes();
        payload.push(0xff);
        let error = "e".repeat(10_000);
        let topic = "t".repeat(10_000);
        let mut l = letter(&payload, &error);
        l.topic = &topic;
        let json = l.to_json();
        assert!(json.len() < 2048, "{} bytes", json.len());
        let v: Value = serde_json::from_str(&json).unwrap();
        let copy = v["payload"].as_str().unwrap();
        assert!(copy.len() <= MAX_PAYLOAD_COPY_BYTES && copy.len() > 500);
        assert!(copy.chars().all(|c| c == '€'));
        assert_eq!(v["payload_truncated"], true);
        assert_eq!(v["payload_bytes"], 3001);
        assert_eq!(
            v["error"].as_str().unwrap().chars().count(),
            MAX_ERROR_CHARS + 1
        );
        assert!(v["error"].as_str().unwrap().ends_with('…'));
        assert_eq!(
            v["topic"].as_str().unwrap().chars().count(),
            MAX_TOPIC_CHARS + 1
        );
    }
}
