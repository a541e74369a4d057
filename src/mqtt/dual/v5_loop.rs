//! The MQTT 5 event loop of [`super`]: rumqttc's, plus the pairing of publishes with
//! their topics (so that a refusal names its topic), what a lost connection held, and
//! two repairs of rumqttc 0.25: a publish held back on a packet id the broker refused
//! ([`V5Loop::release_collision`]) and the in-flight slots of refused QoS 2 publishes
//! ([`WindowRepair`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, Publish as Publish5};
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::v5::{self as r5};
use rumqttc::Outgoing;

use super::client::Shared;
use super::{Event, First, Protocol, Requeued};
use crate::mqtt::v5::{self, WindowRepair};

pub(super) struct V5Loop {
    pub(super) eventloop: r5::EventLoop,
    /// Kept so the request channel stays open until the handle is shared.
    pub(super) client: r5::AsyncClient,
    backlog: VecDeque<r5::Request>,
    /// Topics of the QoS 1/2 publishes `requeue` put in rumqttc's pending queue, not
    /// yet written.
    front: VecDeque<Arc<str>>,
    /// QoS 1/2 publishes written and not yet answered, with their topic.
    inflight: HashMap<u16, Option<Arc<str>>>,
    /// A publish rumqttc held back on a packet id collision, with its topic.
    collided: Option<(u16, Option<Arc<str>>)>,
    pub(super) repair: WindowRepair,
}

impl V5Loop {
    pub(super) fn new(eventloop: r5::EventLoop, client: r5::AsyncClient) -> V5Loop {
        V5Loop {
            eventloop,
            client,
            backlog: VecDeque::new(),
            front: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
            repair: WindowRepair::default(),
        }
    }

    /// After an error. Events rumqttc buffered before it (acknowledgements read,
    /// publishes written) happened before what [`Self::stash`] looks at, and rumqttc
    /// would yield them only after the reconnection, too late for the pairing: they
    /// are converted now and returned, to be yielded before polling again.
    pub(super) fn on_error(&mut self, shared: &Shared, limit: u16) -> Vec<Event> {
        let stale: Vec<r5::Event> = self.eventloop.state.events.drain(..).collect();
        let before = stale
            .into_iter()
            .map(|event| self.convert(event, shared, limit))
            .collect();
        self.stash(shared);
        before
    }

    /// [`super::EventLoop::requeue`] on an MQTT 5 connection; the topics of the
    /// re-queued publishes are noted again from the requests themselves.
    pub(super) fn requeue(&mut self, first: Option<First>, session_present: bool) -> Requeued {
        let mut done = Requeued::default();
        let mut front = VecDeque::with_capacity(1 + self.backlog.len());
        if let Some(f) = first {
            let mut p = Publish5::new(f.topic, v5::qos(f.qos), f.payload, None);
            p.retain = f.retain;
            front.push_back(r5::Request::Publish(p));
        }
        let skip = front.len();
        for request in self.backlog.drain(..) {
            match request {
                r5::Request::PubRel(_) if !session_present => done.settled += 1,
                r5::Request::Publish(_) | r5::Request::PubRel(_) | r5::Request::Disconnect => {
                    front.push_back(request)
                }
                _ => {}
            }
        }
        front.extend(self.eventloop.pending.drain(..));
        done.resent = front.len() - skip;
        self.front = front
            .iter()
            .filter_map(|r| match r {
                r5::Request::Publish(p) if p.qos != QoS5::AtMostOnce => {
                    Some(Arc::from(String::from_utf8_lossy(&p.topic)))
                }
                _ => None,
            })
            .collect();
        self.eventloop.pending = front;
        done
    }

    /// An rumqttc event in the words of [`Event`], pairing publishes with their topic.
    pub(super) fn convert(&mut self, event: r5::Event, shared: &Shared, limit: u16) -> Event {
        let l = self;
        match event {
            r5::Event::Incoming(Packet5::ConnAck(ack)) => {
                l.repair.on_connack(&ack, limit);
                Event::Connected {
                    session_present: ack.session_present,
                    protocol: Protocol::V5,
                }
            }
            r5::Event::Incoming(Packet5::PubAck(ack)) => {
                let topic = l.inflight.remove(&ack.pkid).flatten();
                match v5::puback_refusal(&ack) {
                    None => Event::Acked { pkid: ack.pkid },
                    Some(refusal) => {
                        l.release_collision(ack.pkid);
                        Event::Refused {
                            pkid: ack.pkid,
                            topic,
                            refusal,
                        }
                    }
                }
            }
            r5::Event::Incoming(Packet5::PubRec(rec)) => {
                // Either way the publish leaves rumqttc's in-flight slots here.
                let topic = l.inflight.remove(&rec.pkid).flatten();
                match v5::pubrec_refusal(&rec) {
                    None => Event::Other,
                    Some(refusal) => {
                        l.repair.on_refused_pubrec();
                        l.release_collision(rec.pkid);
                        Event::Refused {
                            pkid: rec.pkid,
                            topic,
                            refusal,
                        }
                    }
                }
            }
            r5::Event::Incoming(Packet5::PubComp(c)) => Event::Acked { pkid: c.pkid },
            r5::Event::Incoming(Packet5::SubAck(s)) => Event::SubAck(
                s.return_codes
                    .iter()
                    .map(|c| matches!(c, r5::mqttbytes::v5::SubscribeReasonCode::Success(_)))
                    .collect(),
            ),
            r5::Event::Incoming(Packet5::Publish(p)) => Event::Message {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
            },
            // QoS 0: no note to pair (see `Client::publish`), no answer to come.
            r5::Event::Outgoing(Outgoing::Publish(0)) => Event::Published { pkid: 0 },
            r5::Event::Outgoing(Outgoing::Publish(pkid)) => {
                let topic = match l.collided.take() {
                    Some((held, topic)) if held == pkid => topic,
                    other => {
                        l.collided = other;
                        l.next_topic(shared)
                    }
                };
                l.inflight.insert(pkid, topic);
                Event::Published { pkid }
            }
            // Held back until `pkid` is acknowledged, then written (Outgoing::Publish).
            r5::Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                l.collided = Some((pkid, l.next_topic(shared)));
                Event::Other
            }
            r5::Event::Outgoing(Outgoing::Disconnect) => Event::Disconnected,
            _ => Event::Other,
        }
    }

    /// Sends next the publish rumqttc holds back on a packet id collision with
    /// `pkid`, which the broker just refused. rumqttc releases a held publish when the
    /// colliding id is acknowledged, but returns before doing so when the answer is a
    /// refusal (PUBACK) or never looks (a refused PUBREC ends the exchange without a
    /// PUBCOMP): the held publish, and every request after it, would wait until the
    /// keep-alive declares the connection dead. Collisions happen after a
    /// reconnection, when re-sent publishes keep their packet ids.
    fn release_collision(&mut self, pkid: u16) {
        let state = &mut self.eventloop.state;
        if let Some(held) = state.collision.take_if(|held| held.pkid == pkid) {
            state.collision_ping_count = 0;
            self.eventloop
                .pending
                .push_front(r5::Request::Publish(held));
            // It is now the first of the pending queue, whose topics `front` holds.
            let topic = match self.collided.take() {
                Some((id, topic)) if id == pkid => topic,
                other => {
                    self.collided = other;
                    None
                }
            };
            self.front
                .push_front(topic.unwrap_or_else(|| Arc::from("?")));
        }
    }

    /// The topic of the publish rumqttc just wrote: its pending queue goes first.
    fn next_topic(&mut self, shared: &Shared) -> Option<Arc<str>> {
        self.front
            .pop_front()
            .or_else(|| shared.topics().pop_front())
    }

    /// After an error: rumqttc moved into `pending` what it had not written yet, what
    /// was in flight, and what was still in its channel. Those channel requests
    /// leave the channel, so their topic notes leave the shared queue; everything is
    /// kept for [`EventLoop::requeue`], which notes the topics again from the requests.
    fn stash(&mut self, shared: &Shared) {
        let publishes = self
            .eventloop
            .pending
            .iter()
            .filter(|r| matches!(r, r5::Request::Publish(p) if p.qos != QoS5::AtMostOnce))
            .count();
        let from_channel = publishes.saturating_sub(self.front.len() + self.inflight.len());
        {
            let mut topics = shared.topics();
            let n = from_channel.min(topics.len());
            topics.drain(..n);
        }
        self.front.clear();
        self.inflight.clear();
        self.repair.on_connection_lost();
        self.backlog.extend(self.eventloop.pending.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MqttArgs;
    use crate::mqtt::dual::{pair, Inner, Setup};
    use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckReason};
    use rumqttc::QoS;

    /// rumqttc, driven by hand: a publish held back on a packet id collision is not
    /// released when the colliding id is refused; `release_collision` sends it next,
    /// with its topic.
    #[test]
    fn a_refused_ack_releases_the_publish_held_on_its_packet_id() {
        let (_client, mut eventloop) = pair(&MqttArgs::default(), Setup::new("t").inflight(2));
        let shared = eventloop.shared.clone();
        let Inner::V5(l) = &mut eventloop.inner else {
            unreachable!()
        };
        l.eventloop.state = r5::MqttState::new(2, false);
        let write = |l: &mut V5Loop, topic: &str| {
            shared.topics().push_back(Arc::from(topic));
            let p = Publish5::new(topic, v5::qos(QoS::AtLeastOnce), "x", None);
            l.eventloop
                .state
                .handle_outgoing_packet(r5::Request::Publish(p))
                .unwrap();
            let event = l.eventloop.state.events.pop_front().unwrap();
            l.convert(event, &shared, 2)
        };
        assert!(matches!(write(l, "a"), Event::Published { pkid: 1 }));
        assert!(matches!(write(l, "b"), Event::Published { pkid: 2 }));
        // The window is 2: the third publish gets id 1 again, still in flight.
        assert!(matches!(write(l, "c"), Event::Other));
        assert!(l.eventloop.state.collision.is_some());
        let mut refused = PubAck::new(1, None);
        refused.reason = PubAckReason::NotAuthorized;
        l.eventloop
            .state
            .handle_incoming_packet(r5::Incoming::PubAck(refused))
            .unwrap();
        // rumqttc left it held.
        assert!(l.eventloop.state.collision.is_some());
        let event = l.eventloop.state.events.pop_front().unwrap();
        match l.convert(event, &shared, 2) {
            Event::Refused { pkid: 1, topic, .. } => assert_eq!(topic.as_deref(), Some("a")),
            other => panic!("{other:?}"),
        }
        assert!(l.eventloop.state.collision.is_none());
        assert!(matches!(
            l.eventloop.pending.front(),
            Some(r5::Request::Publish(p)) if &p.topic[..] == b"c"
        ));
        // Written next, it is paired with its own topic.
        let held = l.eventloop.pending.pop_front().unwrap();
        l.eventloop.state.handle_outgoing_packet(held).unwrap();
        let event = l.eventloop.state.events.pop_front().unwrap();
        assert!(matches!(
            l.convert(event, &shared, 2),
            Event::Published { pkid: 1 }
        ));
        assert_eq!(l.inflight.get(&1), Some(&Some(Arc::from("c"))));
    }
}
