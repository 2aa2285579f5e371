//! The Chat REST API, client side: UserSig, requests, error classes, pace, counters.
//!
//! [`ChatClient`] pulls read receipts (`get_group_msg_receipt`) and group info over HTTPS,
//! paced by one process-wide [`RateLimiter`], retried according to [`classify`], validated
//! before anything is handed out. It knows nothing of Postgres, plans or sinks, and it never
//! lets the secret key or a UserSig reach a log line or an error message.

pub mod client;
pub mod error;
pub mod limiter;
pub mod reach;
pub mod sigcache;
pub mod stats;
pub mod types;
pub mod usersig;

pub use client::{ChatClient, ClientConfig, ReadList, Tuning};
pub use error::{classify, describe_seqs, ChatError, ErrorClass, TransportKind};
pub use limiter::RateLimiter;
pub use stats::{InvalidReason, Stats, StatsSnapshot};
pub use types::{GroupInfo, Pulled, ReceiptAnswer, ReceiptItem};
