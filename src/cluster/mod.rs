//! Cluster mode: the same pipeline across hosts, over Zenoh.
//!
//! SPMD, as timely and MPI run: every host runs the same program, builds
//! the same pipeline and calls [`CompletePipeline::run_on`] with its own
//! [`Cluster`] (its index, every host's locator, where each stage runs).
//! Each host cuts the chain where consecutive stages sit on different
//! hosts and runs its *segments* — maximal runs of its own stages — as
//! ordinary pipelines (threads, or hybrid/distributed on that host): the
//! sending side of a cut ends its segment with a network sink
//! (a sink stage whose items go to `net.rs`'s `Outgoing`) that sends numbered rkyv runs on the key
//! `ringweave/<name>/<edge>/0`; the receiving side starts its segment with
//! a source that reads those messages and validates each run. Around them
//! this module keeps the session: who is up (liveliness tokens), who is
//! done or failed (a control key per host), which ends of stream arrived
//! (acknowledgements), and it turns a host that vanishes with work pending
//! into [`Error::HostLost`] instead of a hang.
//!
//! [`CompletePipeline::run_on`]: crate::CompletePipeline::run_on

pub(crate) mod net;
mod session;
pub(crate) mod wire;

use crate::error::Error;
use crate::handle;
use crate::plan::Plan;
use crate::report::RunReport;
use crate::topology::{Link, NodeId};
use net::{Complete, EdgeCounters, NetIn};
use ringweave_ipc::ring;
use session::{Event, Session};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a host waits for every other host to join, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of items a network run holds at most, by default (a run leaves
/// earlier when the sending stage has nothing more for now).
pub const DEFAULT_RUN_BYTES: usize = 64 * 1024;

/// Where this process sits in a cluster and where each stage runs.
///
/// Every host builds the same pipeline and the same `Cluster` except for
/// its own index (`host`). Stages run on host 0 unless [`place`]d
/// elsewhere; the source and the sink may be placed too.
///
/// # Examples
///
/// Three processes on one machine; on three machines use their addresses.
///
/// ```no_run
/// use ringweave::{Cluster, Pipeline};
///
/// let host: usize = std::env::args().nth(1).unwrap().parse().unwrap();
/// let cluster = Cluster::new(
///     "demo",
///     host,
///     ["tcp/127.0.0.1:7501", "tcp/127.0.0.1:7502", "tcp/127.0.0.1:7503"],
/// )
/// .place("parse", 1)
/// .place("score", 2);
/// let report = Pipeline::from_iter(0..1_000_000u64)
///     .map("parse", |x| x * 3)
///     .map("score", |x| x + 1)
///     .sink(|_| {})
///     .run_on(&cluster)?;
/// println!("host {host}: {:?}", report.edges);
/// # Ok::<(), ringweave::Error>(())
/// ```
///
/// [`place`]: Cluster::place
#[derive(Clone, Debug)]
pub struct Cluster {
    name: String,
    host: usize,
    locators: Vec<String>,
    placement: Vec<(String, usize)>,
    connect_timeout: Duration,
    run_bytes: usize,
}

impl Cluster {
    /// This process is host `host` of the cluster `name`; `locators[i]` is
    /// where host `i` listens (a Zenoh locator such as
    /// `tcp/10.0.0.2:7447`). Hosts connect to each other directly (host
    /// `i` dials every host before it); multicast scouting is off.
    pub fn new<S: Into<String>>(
        name: impl Into<String>,
        host: usize,
        locators: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            name: name.into(),
            host,
            locators: locators.into_iter().map(Into::into).collect(),
            placement: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            run_bytes: DEFAULT_RUN_BYTES,
        }
    }

    /// The cluster described by environment variables:
    /// `RINGWEAVE_CLUSTER_HOST` (this host's index),
    /// `RINGWEAVE_CLUSTER_PEERS` (every host's locator, comma-separated,
    /// in host order), `RINGWEAVE_CLUSTER_NAME` (default `ringweave`) and
    /// `RINGWEAVE_CLUSTER_PLACE` (`stage=host` pairs, comma-separated).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the variable that is missing or
    /// does not parse.
    pub fn from_env() -> Result<Self, Error> {
        let var = |name: &'static str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let invalid = |field: &'static str, reason: String| Error::InvalidConfig { field, reason };
        let host = var("RINGWEAVE_CLUSTER_HOST")
            .ok_or_else(|| invalid("RINGWEAVE_CLUSTER_HOST", "is not set".into()))?;
        let host = host.trim().parse().map_err(|_| {
            invalid(
                "RINGWEAVE_CLUSTER_HOST",
                format!("must be a host index, got `{host}`"),
            )
        })?;
        let peers = var("RINGWEAVE_CLUSTER_PEERS")
            .ok_or_else(|| invalid("RINGWEAVE_CLUSTER_PEERS", "is not set".into()))?;
        let name = var("RINGWEAVE_CLUSTER_NAME").unwrap_or_else(|| "ringweave".into());
        let mut cluster = Self::new(name, host, peers.split(',').map(str::trim));
        for pair in var("RINGWEAVE_CLUSTER_PLACE")
            .iter()
            .flat_map(|p| p.split(','))
        {
            let parsed = pair
                .split_once('=')
                .and_then(|(stage, host)| Some((stage.trim(), host.trim().parse().ok()?)));
            let Some((stage, host)) = parsed else {
                return Err(invalid(
                    "RINGWEAVE_CLUSTER_PLACE",
                    format!("must be `stage=host` pairs, got `{pair}`"),
                ));
            };
            cluster = cluster.place(stage, host);
        }
        Ok(cluster)
    }

    /// Runs stage `stage` (`source`, `sink`, or a name given to the
    /// builder) on host `host`.
    pub fn place(mut self, stage: impl Into<String>, host: usize) -> Self {
        self.placement.push((stage.into(), host));
        self
    }

    /// How long to wait for every host to join before failing (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bytes of items a network run holds at most (default
    /// [`DEFAULT_RUN_BYTES`]; at least one item travels per run). Every
    /// host must be given the same value: the credit window is derived
    /// from it. Counted
    /// as `size_of::<T>()` per item: for items that own heap data
    /// (`String`, `Vec`) a run's message is larger by what they hold.
    pub fn run_bytes(mut self, bytes: usize) -> Self {
        self.run_bytes = bytes;
        self
    }

    /// This process's host index.
    pub fn host(&self) -> usize {
        self.host
    }

    /// How many hosts the cluster has.
    pub fn hosts(&self) -> usize {
        self.locators.len()
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid =
            |field: &'static str, reason: String| Err(Error::InvalidConfig { field, reason });
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !name_ok {
            return invalid(
                "cluster name",
                format!(
                    "must be non-empty ASCII letters, digits, `-`, `_` or `.`, got `{}`",
                    self.name
                ),
            );
        }
        if self.locators.is_empty() {
            return invalid("cluster locators", "must name at least one host".into());
        }
        if let Some(bad) = self
            .locators
            .iter()
            .find(|l| l.is_empty() || l.contains(['"', '\\']))
        {
            return invalid("cluster locators", format!("`{bad}` is not a locator"));
        }
        if self.host >= self.locators.len() {
            return invalid(
                "cluster host",
                format!(
                    "is {} but the cluster has {} hosts",
                    self.host,
                    self.locators.len()
                ),
            );
        }
        if self.run_bytes == 0 || self.run_bytes > 1 << 30 {
            return invalid(
                "run_bytes",
                format!("must be in 1..=1073741824, got {}", self.run_bytes),
            );
        }
        if self.connect_timeout.is_zero() {
            return invalid("connect_timeout", "must be more than zero".into());
        }
        Ok(())
    }
}

/// What one host did in a cluster run.
#[derive(Debug)]
#[non_exhaustive]
pub struct ClusterReport {
    /// This host's index.
    pub host: usize,
    /// The report of each segment this host ran (a maximal run of
    /// consecutive stages placed here), in pipeline order. A segment that
    /// receives from another host starts with a `source` fed by the
    /// network; one that sends ends with a stage named `net→<next stage>`.
    pub segments: Vec<RunReport>,
    /// Every network edge with an end on this host.
    pub edges: Vec<EdgeReport>,
}

/// One end of a network edge, as seen from this host.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EdgeReport {
    /// The stage before the edge.
    pub from: String,
    /// The stage after it.
    pub to: String,
    /// The host at the other end.
    pub peer: usize,
    /// Whether this host sent (`true`) or received the items.
    pub sent: bool,
    /// Items that crossed.
    pub items: u64,
    /// Runs (messages) they crossed in.
    pub runs: u64,
    /// Bytes of those messages, headers included.
    pub bytes: u64,
}

/// A maximal run of consecutive stages on one host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    host: usize,
    first: usize,
    last: usize,
}

/// Cuts a chain whose node `i` runs on `hosts[i]` into segments.
fn segments(hosts: &[usize]) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    for (node, &host) in hosts.iter().enumerate() {
        match out.last_mut() {
            Some(segment) if segment.host == host => segment.last = node,
            _ => out.push(Segment {
                host,
                first: node,
                last: node,
            }),
        }
    }
    out
}

/// The host of every node: host 0 unless placed.
fn placement(names: &[String], cluster: &Cluster) -> Result<Vec<usize>, Error> {
    let mut hosts = vec![0; names.len()];
    for (stage, host) in &cluster.placement {
        let Some(node) = names.iter().position(|n| n == stage) else {
            return Err(Error::InvalidConfig {
                field: "cluster placement",
                reason: format!(
                    "places `{stage}`, which is not a stage (stages: {})",
                    names.join(", ")
                ),
            });
        };
        if *host >= cluster.hosts() {
            return Err(Error::InvalidConfig {
                field: "cluster placement",
                reason: format!(
                    "places `{stage}` on host {host}, but the cluster has {} hosts",
                    cluster.hosts()
                ),
            });
        }
        hosts[node] = *host;
    }
    Ok(hosts)
}

/// One network edge with an end here.
struct NetEdge {
    /// `EdgeId` in the whole pipeline: the key's edge part.
    edge: usize,
    peer: usize,
    sent: bool,
    counters: Arc<EdgeCounters>,
}

/// Runs this host's part of `plan`.
pub(crate) fn run(mut plan: Plan, cluster: &Cluster) -> Result<ClusterReport, Error> {
    cluster.validate()?;
    plan.validate()?;
    let names: Vec<String> = plan.nodes.iter().map(|n| n.name().to_owned()).collect();
    let chain = plan
        .links
        .iter()
        .enumerate()
        .all(|(i, link)| link.from == NodeId(i) && link.to == NodeId(i + 1));
    if !chain {
        return Err(Error::InvalidConfig {
            field: "cluster",
            reason: "cluster mode runs a chain of stages".into(),
        });
    }
    let hosts = placement(&names, cluster)?;
    let me = cluster.host;
    let stages_on = |host: usize| -> Vec<String> {
        (0..names.len())
            .filter(|&n| hosts[n] == host)
            .map(|n| names[n].clone())
            .collect()
    };
    let edge_name = |edge: usize| format!("`{}` → `{}`", names[edge], names[edge + 1]);

    let (events_tx, events) = mpsc::channel();
    let session = Session::open(cluster, events_tx.clone())?;

    let mut run = Running {
        session: &session,
        events_tx: &events_tx,
        stoppers: Vec::new(),
        subscriptions: Vec::new(),
        credits: Vec::new(),
        threads: Vec::new(),
    };
    let mut attempt = || -> Result<ClusterReport, Error> {
        // Lay out this host's segments: network ends where the chain is cut.
        let options = plan.options.clone();
        let mut nodes: Vec<_> = plan.nodes.drain(..).map(Some).collect();
        let mut specs: Vec<_> = plan.edges.drain(..).map(Some).collect();
        let mut local = Vec::new();
        let mut net_edges = Vec::new();
        let mut publishers = Vec::new();
        for segment in segments(&hosts).into_iter().filter(|s| s.host == me) {
            let mut seg_nodes = Vec::new();
            let mut seg_edges = Vec::new();
            if segment.first > 0 {
                let edge = segment.first - 1;
                let spec = specs[edge].take().expect("each edge is cut once");
                // Room for a window of runs and the end: the callback
                // never finds it full unless the sender broke its credit.
                let window = wire::window(cluster.run_bytes);
                let (producer, messages) = ring::channel(2 * window as usize);
                let overflow = Arc::new(AtomicBool::new(false));
                run.subscriptions
                    .push(session.receive(edge, producer, Arc::clone(&overflow))?);
                let counters = Arc::new(EdgeCounters::default());
                net_edges.push(NetEdge {
                    edge,
                    peer: hosts[edge],
                    sent: false,
                    counters: Arc::clone(&counters),
                });
                let events = events_tx.clone();
                seg_nodes.push(spec.net_source(NetIn {
                    edge: edge_name(edge),
                    peer: hosts[edge],
                    messages,
                    overflow,
                    grant: Box::new(session.granter(edge)),
                    window,
                    complete: Box::new(move |Complete { runs, items }| {
                        let _ = events.send(Event::Received { edge, runs, items });
                    }),
                    counters,
                }));
                seg_edges.push(spec);
            }
            for node in segment.first..=segment.last {
                seg_nodes.push(nodes[node].take().expect("each node is in one segment"));
                if node < segment.last {
                    seg_edges.push(specs[node].take().expect("each edge is in one segment"));
                }
            }
            if segment.last + 1 < names.len() {
                let edge = segment.last;
                let spec = specs[edge].take().expect("each edge is cut once");
                let publisher = session.send(edge, wire::window(cluster.run_bytes))?;
                let counters = Arc::new(EdgeCounters::default());
                seg_nodes.push(spec.net_sink(
                    format!("net→{}", names[edge + 1]),
                    crate::edge::NetOut {
                        host: me,
                        edge: edge_name(edge),
                        wire: Box::new(publisher.clone()),
                        run_bytes: cluster.run_bytes,
                        counters: Arc::clone(&counters),
                    },
                ));
                seg_edges.push(spec);
                net_edges.push(NetEdge {
                    edge,
                    peer: hosts[edge + 1],
                    sent: true,
                    counters,
                });
                run.credits.push(Arc::clone(&publisher.credit));
                publishers.push((edge, publisher));
            }
            let links = (0..seg_edges.len())
                .map(|i| Link {
                    from: NodeId(i),
                    to: NodeId(i + 1),
                })
                .collect();
            local.push(Plan {
                nodes: seg_nodes,
                edges: seg_edges,
                links,
                options: options.clone(),
                invalid: None,
            });
        }

        // Nothing moves until every host is up and every edge this host sends
        // on has its receiver: a run sent before that would be dropped.
        let deadline = Instant::now() + cluster.connect_timeout;
        let mut host_state = HostStates::default();
        session.await_hosts(&events, deadline, &mut host_state)?;
        for (edge, publisher) in &publishers {
            publisher
                .await_receiver(deadline)
                .map_err(|reason| Error::Cluster {
                    host: hosts[edge + 1],
                    reason: format!("edge {}: {reason}", edge_name(*edge)),
                })?;
        }

        let segments = run.drive(
            local,
            &net_edges,
            &events,
            &mut host_state,
            &|host| stages_on(host),
            &edge_name,
        )?;
        Ok(ClusterReport {
            host: me,
            segments,
            edges: net_edges
                .iter()
                .map(|e| EdgeReport {
                    from: names[e.edge].clone(),
                    to: names[e.edge + 1].clone(),
                    peer: e.peer,
                    sent: e.sent,
                    items: e.counters.items.load(Ordering::Relaxed),
                    runs: e.counters.runs.load(Ordering::Relaxed),
                    bytes: e.counters.bytes.load(Ordering::Relaxed),
                })
                .collect(),
        })
    };
    let result = attempt();
    // Stop before telling the others: nothing here then waits on them.
    run.finish();
    if let Err(error) = &result {
        session.abort(&error.to_string());
    }
    session.close();
    result
}

/// What this host knows of the others.
#[derive(Default)]
pub(crate) struct HostStates {
    up: BTreeSet<usize>,
    done: BTreeSet<usize>,
}

/// The threads of a run in progress, and how to stop them.
struct Running<'a> {
    session: &'a Session,
    events_tx: &'a mpsc::Sender<Event>,
    stoppers: Vec<handle::Stopper>,
    /// The data subscriptions: dropping one ends its edge's feed.
    subscriptions: Vec<session::Subscription>,
    credits: Vec<Arc<session::Credit>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Running<'_> {
    /// Starts the segments and follows the run
    /// to its end: every segment finished, every incoming stream complete
    /// and every outgoing one acknowledged.
    #[allow(clippy::too_many_arguments)]
    fn drive(
        &mut self,
        local: Vec<Plan>,
        net_edges: &[NetEdge],
        events: &mpsc::Receiver<Event>,
        hosts: &mut HostStates,
        stages_on: &dyn Fn(usize) -> Vec<String>,
        edge_name: &dyn Fn(usize) -> String,
    ) -> Result<Vec<RunReport>, Error> {
        let mut pending_in: BTreeMap<usize, usize> = BTreeMap::new();
        let mut pending_ack: BTreeMap<usize, usize> = BTreeMap::new();
        for e in net_edges {
            if e.sent {
                pending_ack.insert(e.edge, e.peer);
            } else {
                pending_in.insert(e.edge, e.peer);
            }
        }
        for (index, mut plan) in local.into_iter().enumerate() {
            let topology = plan.validate()?;
            let handle = handle::spawn(plan, topology)?;
            self.stoppers.push(handle.stopper());
            let tx = self.events_tx.clone();
            self.threads.push(spawn("rw-cluster-join", move || {
                let _ = tx.send(Event::SegmentEnded {
                    index,
                    result: Box::new(handle.join()),
                });
            })?);
        }
        let segments_total = self.stoppers.len();
        let mut reports: Vec<Option<RunReport>> = (0..segments_total).map(|_| None).collect();
        let mut finished = 0;
        // Ok only once every host has said it is done: a host whose part
        // ended well cannot know that the rest of the run did.
        let me = self.session.host();
        let mut said_done = false;
        loop {
            let mine =
                finished == segments_total && pending_in.is_empty() && pending_ack.is_empty();
            if mine && !said_done {
                self.session.done();
                said_done = true;
            }
            if mine && (0..self.session.hosts()).all(|h| h == me || hosts.done.contains(&h)) {
                break;
            }
            let event = events.recv().expect("the host holds a sender");
            match event {
                Event::SegmentEnded { index, result } => {
                    reports[index] = Some((*result)?);
                    finished += 1;
                }
                Event::Received { edge, runs, items } => {
                    pending_in.remove(&edge);
                    self.session.ack(edge, runs, items);
                }
                Event::Ack { edge, items } => {
                    let Some(peer) = pending_ack.remove(&edge) else {
                        continue;
                    };
                    let sent = net_edges
                        .iter()
                        .find(|e| e.edge == edge && e.sent)
                        .map_or(0, |e| e.counters.items.load(Ordering::Relaxed));
                    if items != sent {
                        return Err(Error::Cluster {
                            host: peer,
                            reason: format!(
                                "edge {}: {sent} items sent, the receiver took {items}",
                                edge_name(edge)
                            ),
                        });
                    }
                }
                Event::HostUp(host) => {
                    hosts.up.insert(host);
                }
                Event::Done(host) => {
                    let owed = pending_in
                        .iter()
                        .chain(&pending_ack)
                        .find(|(_, &p)| p == host);
                    if let Some((&edge, _)) = owed {
                        return Err(Error::Cluster {
                            host,
                            reason: format!(
                                "said it was done while edge {} was incomplete",
                                edge_name(edge)
                            ),
                        });
                    }
                    hosts.done.insert(host);
                }
                Event::HostDown(host) => {
                    hosts.up.remove(&host);
                    if !hosts.done.contains(&host) {
                        return Err(Error::HostLost {
                            host,
                            stages: stages_on(host),
                        });
                    }
                }
                Event::Abort { host, reason } => return Err(Error::Cluster { host, reason }),
            }
        }
        Ok(reports.into_iter().flatten().collect())
    }

    /// Stops whatever still runs and joins every thread.
    fn finish(&mut self) {
        for stopper in &self.stoppers {
            stopper.stop();
        }
        for credit in &self.credits {
            credit.stop();
        }
        self.subscriptions.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn spawn(
    name: &str,
    body: impl FnOnce() + Send + 'static,
) -> Result<thread::JoinHandle<()>, Error> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|source| Error::Spawn {
            stage: name.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_is_cut_where_hosts_change() {
        let cut = |hosts: &[usize]| -> Vec<(usize, usize, usize)> {
            segments(hosts)
                .into_iter()
                .map(|s| (s.host, s.first, s.last))
                .collect()
        };
        assert_eq!(cut(&[0, 0, 0]), [(0, 0, 2)]);
        assert_eq!(
            cut(&[0, 1, 2, 0]),
            [(0, 0, 0), (1, 1, 1), (2, 2, 2), (0, 3, 3)]
        );
        assert_eq!(cut(&[0, 1, 1, 0, 0]), [(0, 0, 0), (1, 1, 2), (0, 3, 4)]);
    }

    #[test]
    fn configurations_are_checked() {
        let ok = Cluster::new("p", 1, ["tcp/127.0.0.1:1", "tcp/127.0.0.1:2"]);
        assert!(ok.validate().is_ok());
        let field = |c: Cluster| match c.validate() {
            Err(Error::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(Cluster::new("p", 2, ["tcp/a:1", "tcp/b:2"])),
            "cluster host"
        );
        assert_eq!(field(Cluster::new("a/b", 0, ["tcp/a:1"])), "cluster name");
        assert_eq!(
            field(Cluster::new("p", 0, Vec::<String>::new())),
            "cluster locators"
        );
        assert_eq!(field(ok.clone().run_bytes(0)), "run_bytes");
        let names: Vec<String> = ["source", "a", "sink"].map(String::from).to_vec();
        assert_eq!(
            placement(&names, &ok.clone().place("a", 1)).unwrap(),
            [0, 1, 0]
        );
        assert!(matches!(
            placement(&names, &ok.clone().place("b", 1)),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(placement(&names, &ok.place("a", 2))
            .unwrap_err()
            .to_string()
            .contains("2 hosts"));
    }
}
