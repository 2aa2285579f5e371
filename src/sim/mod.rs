//! The Chat API simulator: the server side of the contract the exporter's client speaks.
//!
//! It answers `get_group_msg_receipt`, `get_group_msg_receipt_detail` (read lists consistent
//! with the counts, see `details`) and `get_group_info` over HTTP/1.1 as the documentation
//! describes them (query checks, UserSig, error codes, 200 calls/s per API), with read counts
//! that are a pure function of (seed, group, seq, step), plus latency and injected faults.
//! Tests, the demo and benchmarks run against it. It must never log a UserSig or the key.
//!
//! `/sim/*` (no auth) drives it from outside: `POST /sim/advance`, `POST
//! /sim/groups/{id}/messages`, `GET /sim/groups`, `GET /sim/stats`.

mod api;
mod args;
mod callbacks;
mod details;
mod groups;
mod query;
mod receipts;
mod server;
mod traffic;

pub use api::MAX_GROUP_INFO_IDS;
pub use args::{serve, SimArgs};
pub use callbacks::{CallbackReport, Callbacks, Forgery, Row as CallbackRow};
pub use details::{member_account, read_list_at, MAX_READ_PAGE};
pub use groups::{
    check_groups, generate_groups, load_groups, valid_group_id, GroupType, GroupsFileError,
    SimGroup, MAX_GROUP_ID_BYTES,
};
pub use receipts::{receipt_at, MAX_RECEIPT_MEMBERS, MAX_SETTLE_STEPS, NO_RECEIPT};
pub use traffic::{Background, Endpoint, EndpointStats, FaultStats, SimStats};

use crate::secret::Secret;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use traffic::Traffic;

/// Injected faults: each a probability per call (0..=1, together at most 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// HTTP 502 with an HTML body, as a gateway gives.
    pub http_502: f64,
    /// `ErrorCode` 10002 (internal error, retry).
    pub internal_10002: f64,
    /// The connection closes without an answer.
    pub drop_connection: f64,
    /// The answer comes after `slow_delay` (on top of the latency).
    pub slow: f64,
    pub slow_delay: Duration,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            http_502: 0.0,
            internal_10002: 0.0,
            drop_connection: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(5),
        }
    }
}

/// Everything a simulator is started with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The one app this server knows; other SDKAppIDs are refused (60006).
    pub sdkappid: u64,
    /// The app's secret key, to verify UserSigs with.
    pub key: Secret,
    /// The app admin account; other (validly signed) accounts get 60010.
    pub identifier: String,
    /// Seeds the read counts (and names generated groups).
    pub seed: u64,
    pub groups: Vec<SimGroup>,
    /// Calls per sliding second and API; 0 = no limit.
    pub rate_limit: u32,
    /// Longest `MsgSeqList` accepted (the API documents none; 10004 above it).
    pub max_batch: usize,
    /// Mean round trip added to every API call. Half of it is the way there: the call counts
    /// against the limit when it arrives, after that half; the answer takes the other half.
    pub latency: Duration,
    /// Each way is uniform in `latency / 2 ± latency_jitter / 2`, drawn independently (never
    /// below zero), so a round trip stays within `latency ± latency_jitter`.
    pub latency_jitter: Duration,
    /// Another client of the same app, taking calls from the same window.
    pub background: Vec<Background>,
    pub faults: Faults,
    /// Advance the step by one this often; `None` = only when told.
    pub step_every: Option<Duration>,
    /// Most members per read-list page (`get_group_msg_receipt_detail`), below the request's
    /// `Count`: lowered to make clients page.
    pub read_page_max: usize,
}

impl SimConfig {
    /// The documented defaults (200 calls/s, batches of 100, no latency, no faults) with
    /// five generated groups of 200 messages (seed 1).
    pub fn new(sdkappid: u64, key: Secret, identifier: impl Into<String>) -> SimConfig {
        SimConfig {
            sdkappid,
            key,
            identifier: identifier.into(),
            seed: 1,
            groups: generate_groups(1, 5, 200),
            rate_limit: 200,
            max_batch: 100,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            background: Vec::new(),
            faults: Faults::default(),
            step_every: None,
            read_page_max: details::MAX_READ_PAGE,
        }
    }
}

/// The groups, in their configured order, with an index by id.
#[derive(Debug, Default)]
struct Groups {
    list: Vec<SimGroup>,
    index: HashMap<String, usize>,
}

/// State shared by the handle and every connection.
pub(crate) struct Shared {
    /// The configuration; its `groups` are moved into `groups` at start.
    config: SimConfig,
    seed: u64,
    max_batch: usize,
    groups: RwLock<Groups>,
    step: AtomicU64,
    traffic: Mutex<Traffic>,
    /// Numbers `RequestId`s.
    requests: AtomicU64,
}

impl Shared {
    fn new(mut config: SimConfig) -> Shared {
        let list = std::mem::take(&mut config.groups);
        let index = list
            .iter()
            .enumerate()
            .map(|(i, g)| (g.group_id.clone(), i))
            .collect();
        Shared {
            seed: config.seed,
            max_batch: config.max_batch,
            traffic: Mutex::new(Traffic::new(config.rate_limit, &config.background)),
            groups: RwLock::new(Groups { list, index }),
            step: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            config,
        }
    }

    fn group(&self, id: &str) -> Option<SimGroup> {
        let groups = self.groups.read().expect("groups lock");
        groups.index.get(id).map(|&i| groups.list[i].clone())
    }

    fn groups(&self) -> Vec<SimGroup> {
        self.groups.read().expect("groups lock").list.clone()
    }

    fn step(&self) -> u64 {
        self.step.load(Ordering::SeqCst)
    }

    fn advance(&self, n: u64) -> u64 {
        self.step.fetch_add(n, Ordering::SeqCst) + n
    }

    fn add_messages(&self, group_id: &str, n: u64) -> Option<u64> {
        let mut groups = self.groups.write().expect("groups lock");
        let i = *groups.index.get(group_id)?;
        let group = &mut groups.list[i];
        group.next_msg_seq += n;
        Some(group.next_msg_seq)
    }

    fn stats(&self) -> SimStats {
        self.traffic
            .lock()
            .expect("traffic lock")
            .stats(self.step())
    }
}

/// A running simulator. Dropping it stops the server too; [`Simulator::shutdown`] also
/// waits until it has stopped.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Dropping or sending on it stops the accept loop and the step ticker.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulator {
    /// Binds `addr` (port 0 picks a free port) and serves on the current Tokio runtime.
    ///
    /// Panics outside a Tokio runtime. Refuses invalid groups (duplicate ids, seq 0).
    pub fn start(config: SimConfig, addr: SocketAddr) -> io::Result<Simulator> {
        check_groups(&config.groups)
            .map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // A restart on a fixed port must not wait for old connections in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let addr = listener.local_addr()?;
        let step_every = config.step_every;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server::run(
            listener,
            shared.clone(),
            stopped.clone(),
        ))];
        if let Some(every) = step_every {
            tasks.push(tokio::spawn(server::tick(every, shared.clone(), stopped)));
        }
        tracing::debug!(%addr, "simulator started");
        Ok(Simulator {
            shared,
            addr,
            stop,
            tasks,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL a client is pointed at.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Moves the read counts `n` steps on; returns the new step.
    pub fn advance(&self, n: u64) -> u64 {
        self.shared.advance(n)
    }

    /// The current step.
    pub fn step(&self) -> u64 {
        self.shared.step()
    }

    /// Appends `n` messages to a group; returns its new `NextMsgSeq`, `None` if no such group.
    pub fn add_messages(&self, group_id: &str, n: u64) -> Option<u64> {
        self.shared.add_messages(group_id, n)
    }

    /// A group as it is now.
    pub fn group(&self, group_id: &str) -> Option<SimGroup> {
        self.shared.group(group_id)
    }

    /// All groups, in configured order.
    pub fn groups(&self) -> Vec<SimGroup> {
        self.shared.groups()
    }

    /// `(Code, ReadNum, UnreadNum)` the API would answer now for one seq; `(10010, 0, 0)` for
    /// an unknown group. (For AVChatRoom or Community groups the API refuses the whole call
    /// with 10007 instead.)
    pub fn expected(&self, group_id: &str, seq: u64) -> (i32, u32, u32) {
        match self.group(group_id) {
            Some(g) => receipt_at(self.shared.seed, &g, seq, self.step()),
            None => (10010, 0, 0),
        }
    }

    /// The read list `get_group_msg_receipt_detail` would page through now for one seq, in
    /// its order; `None` without a receipt or for an unknown group.
    pub fn read_list(&self, group_id: &str, seq: u64) -> Option<Vec<String>> {
        let g = self.group(group_id)?;
        read_list_at(self.shared.seed, &g, seq, self.step())
    }

    /// Stops accepting, lets open connections finish briefly, and waits for the server.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}
