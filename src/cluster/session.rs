//! This host's Zenoh session and the key expressions of a cluster run.
//!
//! Keys, under `ringweave/<name>/`:
//!
//! | key | what travels |
//! |---|---|
//! | `<edge>/0` | the runs of edge `<edge>` (its `EdgeId`), then its end |
//! | `ack/<edge>` | the receiver's acknowledgement of that end |
//! | `credit/<edge>` | how many runs of that edge the sender may have sent |
//! | `ctl/<host>` | host `<host>` is done, or failed and why |
//! | `host/<host>` | a liveliness token per host: up while its process is |
//!
//! The trailing `0` of a data key is the replica index, reserved for a
//! stage split across hosts.
//!
//! Flow control is by credit, not by blocking: a receiver's callback never
//! waits (it puts the message into a ring of two windows), and the sender
//! sends run `s` only once the receiver has granted more than `s` runs
//! (`wire::window` runs ahead of what it has read). A blocked callback would
//! stall every key on its link, and Zenoh closes a link whose blocking
//! `put` waits more than a few seconds. Control messages (`ctl`, `ack`,
//! `credit`) block rather than drop, at a higher priority than data.

use super::net::{SendError, Wire};
use super::wire::{self, Tag};
use super::{Cluster, HostStates};
use crate::error::Error;
use parking_lot::{Condvar, Mutex};
use ringweave_ipc::ring::Producer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use zenoh::bytes::ZBytes;
use zenoh::qos::{CongestionControl, Priority};
use zenoh::sample::SampleKind;
use zenoh::Wait;

/// What the session tells the host's loop.
pub(crate) enum Event {
    HostUp(usize),
    HostDown(usize),
    Done(usize),
    Abort {
        host: usize,
        reason: String,
    },
    Ack {
        edge: usize,
        items: u64,
    },
    SegmentEnded {
        index: usize,
        result: Box<Result<crate::RunReport, Error>>,
    },
    /// The end of edge `edge`'s stream arrived here.
    Received {
        edge: usize,
        runs: u64,
        items: u64,
    },
}

/// An open session with this host's token and control subscriptions.
pub(crate) struct Session {
    session: zenoh::Session,
    prefix: String,
    host: usize,
    hosts: usize,
    /// Kept for their side effects: dropping one undeclares it.
    _token: zenoh::liveliness::LivelinessToken,
    _watch: Vec<zenoh::pubsub::Subscriber<()>>,
}

/// A declared subscriber of one edge's data: receiving stops when dropped.
pub(crate) struct Subscription(#[allow(dead_code)] zenoh::pubsub::Subscriber<()>);

/// How often a sender waiting for credit looks at its stage's barrier.
const CREDIT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The runs an edge's sender may have sent, as its receiver grants them.
pub(crate) struct Credit {
    limit: Mutex<u64>,
    changed: Condvar,
    stopped: AtomicBool,
}

impl Credit {
    /// The credit of a sender that may send `window` runs before the
    /// receiver says more.
    fn new(window: u64) -> Self {
        Self {
            limit: Mutex::new(window),
            changed: Condvar::new(),
            stopped: AtomicBool::new(false),
        }
    }

    fn grant(&self, limit: u64) {
        let mut current = self.limit.lock();
        if limit > *current {
            *current = limit;
            self.changed.notify_all();
        }
    }

    /// Ends every wait for credit: the host's run is over.
    pub(crate) fn stop(&self) {
        // Relaxed: read under the mutex, which orders it.
        self.stopped.store(true, Ordering::Relaxed);
        let _guard = self.limit.lock();
        self.changed.notify_all();
    }

    /// Waits until run `seq` may be sent. `interrupt()` is looked at every
    /// `CREDIT_POLL` while it waits (the stage's barrier cannot wake a
    /// condition variable).
    fn await_run(&self, seq: u64, interrupt: &dyn Fn() -> bool) -> Result<(), SendError> {
        let mut limit = self.limit.lock();
        while *limit <= seq {
            if self.stopped.load(Ordering::Relaxed) {
                return Err(SendError::Failed(
                    "stopped while waiting for the receiver's credit".into(),
                ));
            }
            if interrupt() {
                return Err(SendError::Interrupted);
            }
            self.changed.wait_for(&mut limit, CREDIT_POLL);
        }
        Ok(())
    }
}

/// The sending side of one edge.
#[derive(Clone)]
pub(crate) struct Publisher {
    publisher: std::sync::Arc<zenoh::pubsub::Publisher<'static>>,
    pub(crate) credit: std::sync::Arc<Credit>,
    /// Runs sent through this handle.
    sent: u64,
    _credit_subscriber: std::sync::Arc<zenoh::pubsub::Subscriber<()>>,
}

/// The index at the end of `key` (`…/host/3` → 3).
fn index_of(key: &str) -> Option<usize> {
    key.rsplit('/').next()?.parse().ok()
}

/// A failure of this host's session: `what` was being done.
fn session_error(host: usize, what: &str, e: zenoh::Error) -> Error {
    Error::Cluster {
        host,
        reason: format!("{what}: {e}"),
    }
}

/// Subscribes to `key` (ending in `*`): each message's key index and bytes
/// become an event, if `decode` makes one of them.
fn watch_key(
    session: &zenoh::Session,
    key: String,
    events: mpsc::Sender<Event>,
    decode: impl Fn(usize, &[u8]) -> Option<Event> + Send + Sync + 'static,
) -> zenoh::Result<zenoh::pubsub::Subscriber<()>> {
    session
        .declare_subscriber(key)
        .callback(move |sample| {
            let Some(index) = index_of(sample.key_expr().as_str()) else {
                return;
            };
            if let Some(event) = decode(index, &sample.payload().to_bytes()) {
                let _ = events.send(event);
            }
        })
        .wait()
}

impl Session {
    /// Opens this host's session: listens on its locator, dials every
    /// host before it, no scouting; declares its liveliness token and
    /// watches the others', the control keys and the acknowledgements.
    pub(crate) fn open(cluster: &Cluster, events: mpsc::Sender<Event>) -> Result<Self, Error> {
        let failed = |what: &str, e| session_error(cluster.host, what, e);
        let quote = |ls: &[String]| {
            let quoted: Vec<String> = ls.iter().map(|l| format!("\"{l}\"")).collect();
            format!("[{}]", quoted.join(","))
        };
        let mut config = zenoh::Config::default();
        let settings = [
            ("mode", "\"peer\"".to_owned()),
            (
                "listen/endpoints",
                quote(&cluster.locators[cluster.host..=cluster.host]),
            ),
            (
                "connect/endpoints",
                quote(&cluster.locators[..cluster.host]),
            ),
            ("scouting/multicast/enabled", "false".to_owned()),
            ("scouting/gossip/enabled", "false".to_owned()),
        ];
        for (key, value) in settings {
            config
                .insert_json5(key, &value)
                .map_err(|e| failed(&format!("configuring `{key}` = {value}"), e))?;
        }
        let session = zenoh::open(config)
            .wait()
            .map_err(|e| failed("opening the Zenoh session", e))?;
        let prefix = format!("ringweave/{}", cluster.name);
        let mut watch = Vec::new();
        let tx = events.clone();
        watch.push(
            session
                .liveliness()
                .declare_subscriber(format!("{prefix}/host/*"))
                .history(true)
                .callback(move |sample| {
                    let Some(host) = index_of(sample.key_expr().as_str()) else {
                        return;
                    };
                    let _ = tx.send(match sample.kind() {
                        SampleKind::Put => Event::HostUp(host),
                        SampleKind::Delete => Event::HostDown(host),
                    });
                })
                .wait()
                .map_err(|e| failed("watching the hosts", e))?,
        );
        let control = |host, bytes: &[u8]| match wire::header(bytes).map(|h| h.tag) {
            Ok(Tag::Done) => Some(Event::Done(host)),
            Ok(Tag::Abort) => Some(Event::Abort {
                host,
                reason: String::from_utf8_lossy(&bytes[wire::HEADER..]).into_owned(),
            }),
            _ => None,
        };
        watch.push(
            watch_key(&session, format!("{prefix}/ctl/*"), events.clone(), control)
                .map_err(|e| failed("watching the control keys", e))?,
        );
        let ack = |edge, bytes: &[u8]| {
            let items = wire::body_u64(bytes).ok()?;
            Some(Event::Ack { edge, items })
        };
        watch.push(
            watch_key(&session, format!("{prefix}/ack/*"), events, ack)
                .map_err(|e| failed("watching the acknowledgements", e))?,
        );
        // Declared after the subscriptions: a host that sees this token
        // can count on this one hearing its control messages.
        let token = session
            .liveliness()
            .declare_token(format!("{prefix}/host/{}", cluster.host))
            .wait()
            .map_err(|e| failed("declaring the liveliness token", e))?;
        Ok(Self {
            session,
            prefix,
            host: cluster.host,
            hosts: cluster.hosts(),
            _token: token,
            _watch: watch,
        })
    }

    fn failed(&self, what: String, e: zenoh::Error) -> Error {
        session_error(self.host, &what, e)
    }

    /// Receives edge `edge`'s messages into `into`, never waiting: the
    /// credit the receiver grants bounds them, and a message that finds
    /// the ring full sets `overflow` (a sender that ignored its credit).
    pub(crate) fn receive(
        &self,
        edge: usize,
        into: Producer<ZBytes>,
        overflow: Arc<AtomicBool>,
    ) -> Result<Subscription, Error> {
        let into = Mutex::new(into);
        self.session
            .declare_subscriber(format!("{}/{edge}/0", self.prefix))
            .callback(move |sample| {
                let mut into = into.lock();
                if into.push(sample.payload().clone()).is_err() {
                    // Release, then a wake-up: the reader, asleep on an
                    // empty ring or not, sees the flag (Acquire) next.
                    overflow.store(true, Ordering::Release);
                    into.waker().wake();
                }
            })
            .wait()
            .map(Subscription)
            .map_err(|e| self.failed(format!("subscribing to edge {edge}"), e))
    }

    /// A publisher of edge `edge`'s messages, with the credit its
    /// receiver grants.
    pub(crate) fn send(&self, edge: usize, window: u64) -> Result<Publisher, Error> {
        let publisher = self
            .session
            .declare_publisher(format!("{}/{edge}/0", self.prefix))
            .congestion_control(CongestionControl::Block)
            .wait()
            .map_err(|e| self.failed(format!("publishing edge {edge}"), e))?;
        let credit = std::sync::Arc::new(Credit::new(window));
        let granted = std::sync::Arc::clone(&credit);
        let subscriber = self
            .session
            .declare_subscriber(format!("{}/credit/{edge}", self.prefix))
            .callback(move |sample| {
                if let Ok(limit) = wire::body_u64(&sample.payload().to_bytes()) {
                    granted.grant(limit);
                }
            })
            .wait()
            .map_err(|e| self.failed(format!("watching edge {edge}'s credit"), e))?;
        Ok(Publisher {
            publisher: std::sync::Arc::new(publisher),
            credit,
            sent: 0,
            _credit_subscriber: std::sync::Arc::new(subscriber),
        })
    }

    /// What the receiving end of edge `edge` calls to grant credit: the
    /// sender may have sent `limit` runs in all.
    pub(crate) fn granter(&self, edge: usize) -> impl FnMut(u64) + Send + 'static {
        let session = self.session.clone();
        let key = format!("{}/credit/{edge}", self.prefix);
        move |limit| {
            let message = wire::message(Tag::Credit, 0, &limit.to_le_bytes());
            let _ = session
                .put(&key, message)
                .congestion_control(CongestionControl::Block)
                .priority(Priority::InteractiveHigh)
                .wait();
        }
    }

    /// This host's index.
    pub(crate) fn host(&self) -> usize {
        self.host
    }

    /// How many hosts the cluster has.
    pub(crate) fn hosts(&self) -> usize {
        self.hosts
    }

    /// Waits until every host has been seen up (or done), consuming the
    /// events that say so.
    pub(crate) fn await_hosts(
        &self,
        events: &mpsc::Receiver<Event>,
        deadline: Instant,
        hosts: &mut HostStates,
    ) -> Result<(), Error> {
        let missing = |hosts: &HostStates| {
            (0..self.hosts).find(|h| !hosts.up.contains(h) && !hosts.done.contains(h))
        };
        while let Some(host) = missing(hosts) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let event = match events.recv_timeout(wait) {
                Ok(event) => event,
                Err(_) => {
                    return Err(Error::Cluster {
                        host,
                        reason: format!(
                            "did not join within the connect timeout (host {} waited)",
                            self.host
                        ),
                    })
                }
            };
            match event {
                Event::HostUp(h) => {
                    hosts.up.insert(h);
                }
                Event::Done(h) => {
                    hosts.done.insert(h);
                }
                // Seen up once counts as joined; gone without a word
                // before the run starts is a failure.
                Event::HostDown(h) if !hosts.done.contains(&h) => {
                    return Err(Error::Cluster {
                        host: h,
                        reason: "left before the run started".into(),
                    })
                }
                Event::Abort { host, reason } => return Err(Error::Cluster { host, reason }),
                // Nothing else happens before the run starts.
                _ => {}
            }
        }
        Ok(())
    }

    /// Acknowledges the end of edge `edge`'s stream.
    pub(crate) fn ack(&self, edge: usize, runs: u64, items: u64) {
        let message = wire::message(Tag::Ack, runs, &items.to_le_bytes());
        // A failure means the session is going: the sender then sees this
        // host leave with its acknowledgement due, and fails the run.
        let _ = self
            .session
            .put(format!("{}/ack/{edge}", self.prefix), message)
            .congestion_control(CongestionControl::Block)
            .priority(Priority::InteractiveHigh)
            .wait();
    }

    /// Tells every host this one is done.
    pub(crate) fn done(&self) {
        self.control(wire::message(Tag::Done, 0, &[]));
    }

    /// Tells every host this one failed, and why.
    pub(crate) fn abort(&self, reason: &str) {
        self.control(wire::message(Tag::Abort, 0, reason.as_bytes()));
    }

    fn control(&self, message: Vec<u8>) {
        let _ = self
            .session
            .put(format!("{}/ctl/{}", self.prefix, self.host), message)
            .congestion_control(CongestionControl::Block)
            .priority(Priority::InteractiveHigh)
            .wait();
    }

    /// Closes the session: the token goes, the others see this host leave.
    pub(crate) fn close(self) {
        let _ = self.session.close().wait();
    }
}

impl Publisher {
    /// Waits until a subscriber of this edge is known, so that no run is
    /// sent into the void.
    pub(crate) fn await_receiver(&self, deadline: Instant) -> Result<(), String> {
        let listener = self
            .publisher
            .matching_listener()
            .wait()
            .map_err(|e| e.to_string())?;
        if self
            .publisher
            .matching_status()
            .wait()
            .map_err(|e| e.to_string())?
            .matching()
        {
            return Ok(());
        }
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match listener.recv_timeout(wait) {
                Ok(Some(status)) if status.matching() => return Ok(()),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    return Err("no receiver subscribed within the connect timeout".into())
                }
            }
        }
    }
}

impl Wire for Publisher {
    fn send(&mut self, message: Vec<u8>, interrupt: &dyn Fn() -> bool) -> Result<(), SendError> {
        let run = wire::header(&message).is_ok_and(|h| h.tag == Tag::Run);
        if run {
            self.credit.await_run(self.sent, interrupt)?;
        }
        self.publisher
            .put(ZBytes::from(message))
            .wait()
            .map_err(|e| SendError::Failed(e.to_string()))?;
        if run {
            self.sent += 1;
        }
        Ok(())
    }
}
