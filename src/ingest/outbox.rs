//! What passes between ingest's writer and its link ([`super::link`]): the
//! [`Delivery`] of each message the link hands over, given back by the writer once the
//! message is settled, and the writer's own publishes (alerts). The [`Outbox`] never
//! blocks the writer; what it carries is bounded by the link, which stops reading
//! while the writer holds too much.

use rumqttc::{Publish, QoS};
use tokio::sync::mpsc;

/// One message handed to the writer: which connection it came on, the packet id to
/// acknowledge (0: QoS 0, nothing to acknowledge) and its payload size, for the
/// link's memory accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    conn: u32,
    pkid: u16,
    bytes: u32,
}

impl Delivery {
    /// The delivery of `p`, received on connection `conn`.
    pub fn new(conn: u32, p: &Publish) -> Delivery {
        Delivery {
            conn,
            pkid: if p.qos == QoS::AtMostOnce { 0 } else { p.pkid },
            bytes: u32::try_from(p.payload.len()).unwrap_or(u32::MAX),
        }
    }

    /// The packet id to acknowledge if the message came on connection `conn` (an
    /// acknowledgement on a later connection could name another message).
    pub fn ack_on(&self, conn: u32) -> Option<u16> {
        (self.pkid != 0 && self.conn == conn).then_some(self.pkid)
    }

    /// Whether the message needs an acknowledgement at all (QoS 1).
    pub fn acknowledges(&self) -> bool {
        self.pkid != 0
    }

    /// Its payload size, for the link's memory accounting.
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }
}

/// What the writer sends back to the link.
#[derive(Debug)]
pub(crate) enum ToLink {
    /// Settled messages, in arrival order: acknowledge those of the current connection.
    Release(Vec<Delivery>),
    Publish(Publish),
}

/// The writer's handle on the link: never blocks (the link bounds what is in flight
/// by not reading, see the module docs).
#[derive(Debug, Clone)]
pub struct Outbox(mpsc::UnboundedSender<ToLink>);

/// An outbox and the link's end of it.
pub(crate) fn channel() -> (Outbox, mpsc::UnboundedReceiver<ToLink>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Outbox(tx), rx)
}

/// The link has stopped (shutdown): nothing more can be sent.
#[derive(Debug, thiserror::Error)]
#[error("the broker link has stopped")]
pub struct LinkClosed;

impl Outbox {
    /// Settles messages, in the order they were received.
    pub fn release(&self, deliveries: Vec<Delivery>) {
        if !deliveries.is_empty() {
            // A closed link has nothing left to acknowledge on.
            let _ = self.0.send(ToLink::Release(deliveries));
        }
    }

    /// Publishes a message (sent as soon as the broker's window for this client's own
    /// QoS 1 publishes has room; a reconnect resends it).
    pub fn publish(
        &self,
        topic: impl Into<String>,
        qos: QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), LinkClosed> {
        let mut p = Publish::new(topic, qos, payload);
        p.retain = retain;
        self.0.send(ToLink::Publish(p)).map_err(|_| LinkClosed)
    }

    /// Publishes a message already built (a dead-letter copy).
    pub fn send(&self, p: Publish) -> Result<(), LinkClosed> {
        self.0.send(ToLink::Publish(p)).map_err(|_| LinkClosed)
    }

    /// An outbox whose messages are read by the returned receiver, for unit tests of
    /// the writer.
    #[cfg(test)]
    pub(crate) fn detached() -> (Outbox, mpsc::UnboundedReceiver<ToLink>) {
        channel()
    }
}

#[cfg(test)]
impl ToLink {
    /// The packet ids a release acknowledges (None for a publish).
    pub(crate) fn released_pkids(&self) -> Option<Vec<u16>> {
        match self {
            ToLink::Release(d) => Some(d.iter().map(|d| d.pkid).collect()),
            ToLink::Publish(_) => None,
        }
    }
}

#[cfg(test)]
impl Delivery {
    pub(crate) fn for_test(pkid: u16) -> Delivery {
        Delivery {
            conn: 1,
            pkid,
            bytes: 100,
        }
    }
}
