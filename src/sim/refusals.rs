//! Publishes the broker refused (MQTT 5 PUBACK/PUBREC reason codes ≥ 0x80, see
//! [`crate::mqtt::v5`]), counted per topic in bounded memory: the first
//! [`MAX_TOPICS`] refused topics of a connection are kept by name with their count and
//! reason; refusals on further topics only add to the total. A misconfigured account
//! refusing every message of a million sensors still costs a few hundred bytes.

use crate::mqtt::v5::Refusal;

/// Refused topics kept by name per connection.
pub const MAX_TOPICS: usize = 16;

/// Refusals on one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRefusals {
    pub topic: String,
    pub count: u64,
    /// The first refusal's reason, e.g. "not authorized (reason code 0x87)".
    pub reason: String,
}

/// A connection's refusals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Refusals {
    total: u64,
    /// At most [`MAX_TOPICS`], in the order they were first refused.
    topics: Vec<TopicRefusals>,
}

impl Refusals {
    /// Counts one refusal on `topic` (`None`: not known). Returns whether this is the
    /// first refusal of a topic kept by name, so that the caller says it once.
    pub fn record(&mut self, topic: Option<&str>, refusal: &Refusal) -> bool {
        self.total += 1;
        let Some(topic) = topic else {
            return false;
        };
        if let Some(t) = self.topics.iter_mut().find(|t| t.topic == topic) {
            t.count += 1;
            return false;
        }
        if self.topics.len() >= MAX_TOPICS {
            return false;
        }
        self.topics.push(TopicRefusals {
            topic: topic.to_owned(),
            count: 1,
            reason: refusal.to_string(),
        });
        true
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The topics kept by name, first refused first.
    pub fn topics(&self) -> &[TopicRefusals] {
        &self.topics
    }

    /// The topic kept by name with the most refusals (the first of equals).
    pub fn worst(&self) -> Option<&TopicRefusals> {
        self.topics.iter().rev().max_by_key(|t| t.count)
    }

    /// Refusals not counted under a kept topic (further topics, unknown topic).
    pub fn unlisted(&self) -> u64 {
        self.total - self.topics.iter().map(|t| t.count).sum::<u64>()
    }
}

/// The one line a run that had refusals ends with: the total, the most refused topic
/// with its count, account and reason, and how many more there were elsewhere.
/// `per_account` holds each connection's account and refusals.
pub fn failure_line(per_account: &[(&str, &Refusals)]) -> Option<String> {
    let total: u64 = per_account.iter().map(|(_, r)| r.total()).sum();
    if total == 0 {
        return None;
    }
    let worst = per_account
        .iter()
        .filter_map(|(account, r)| r.worst().map(|t| (*account, t)))
        .max_by_key(|(_, t)| t.count);
    let Some((account, t)) = worst else {
        return Some(format!(
            "the broker refused {total} message(s) (topics unknown); check the broker's ACL"
        ));
    };
    let more = match total - t.count {
        0 => String::new(),
        n => format!("; {n} more on other topics"),
    };
    Some(format!(
        "the broker refused {total} message(s): {} on {} for account {account}, {}{more}; \
         check the broker's ACL for that account (--json lists the refused topics)",
        t.count, t.topic, t.reason
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENIED: Refusal = Refusal {
        code: 0x87,
        reason: "not authorized",
    };

    #[test]
    fn counts_per_topic_and_says_each_topic_once() {
        let mut r = Refusals::default();
        assert!(r.record(Some("entrepot/sud/s1/v1"), &DENIED));
        assert!(!r.record(Some("entrepot/sud/s1/v1"), &DENIED));
        assert!(r.record(Some("entrepot/sud/s2/v1"), &DENIED));
        assert!(!r.record(Some("entrepot/sud/s2/v1"), &DENIED));
        assert!(!r.record(Some("entrepot/sud/s2/v1"), &DENIED));
        assert!(!r.record(None, &DENIED));
        assert_eq!(r.total(), 6);
        assert_eq!(r.unlisted(), 1);
        let worst = r.worst().unwrap();
        assert_eq!(
            (worst.topic.as_str(), worst.count),
            ("entrepot/sud/s2/v1", 3)
        );
        assert_eq!(worst.reason, "not authorized (reason code 0x87)");
        // Equal counts: the first refused topic.
        let mut r = Refusals::default();
        r.record(Some("a"), &DENIED);
        r.record(Some("b"), &DENIED);
        assert_eq!(r.worst().unwrap().topic, "a");
    }

    #[test]
    fn one_line_names_the_topic_the_count_and_the_account() {
        assert_eq!(failure_line(&[("sensor-nord", &Refusals::default())]), None);
        let mut nord = Refusals::default();
        for _ in 0..3 {
            nord.record(Some("entrepot/sud/s1/v1"), &DENIED);
        }
        nord.record(Some("entrepot/status/simulator"), &DENIED);
        let line =
            failure_line(&[("sensor-nord", &nord), ("sensor-sud", &Refusals::default())]).unwrap();
        assert_eq!(
            line,
            "the broker refused 4 message(s): 3 on entrepot/sud/s1/v1 for account sensor-nord, \
             not authorized (reason code 0x87); 1 more on other topics; check the broker's ACL \
             for that account (--json lists the refused topics)"
        );
        assert!(!line.contains('\n'));
    }

    /// The bound, at two sizes: 100 and 100,000 refused topics keep the same memory.
    #[test]
    fn memory_is_bounded_whatever_the_number_of_topics() {
        for n in [100u64, 100_000] {
            let mut r = Refusals::default();
            for i in 0..n {
                r.record(Some(&format!("entrepot/z{i}/s1/v1")), &DENIED);
            }
            assert_eq!(r.total(), n);
            assert_eq!(r.topics().len(), MAX_TOPICS);
            assert_eq!(r.unlisted(), n - MAX_TOPICS as u64);
        }
    }
}
