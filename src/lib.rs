//! receipt-exporter: Tencent Cloud Chat group read receipts as an analytics time series.
//!
//! The data's way, one module per stage:
//! tracked groups and seq windows in Postgres ([`tracking`]) → a plan of batches ([`plan`])
//! → the Chat REST API, rate-limited and retried ([`chat`]) → the sinks, Postgres and
//! Parquet (Hive-style directories or an Iceberg table), exactly once ([`sink`], whose
//! [`sink::target`] is the lake's one seam and tells the protocol of every form; the lake is a
//! directory or an object store prefix, [`lake`]), driven by the export run and its ledger
//! ([`run`], which also owns its variants: a backfill, and the API budget runs share).
//! [`schedule`] starts runs from job files; [`ops`] reads the ledger for operators (history,
//! freshness, metrics, doctor); [`commands`] holds one file per subcommand and is the only
//! place that knows about the terminal; [`exit`] maps outcomes to exit codes; [`sim`] is the
//! server side of the same API contract. [`listen`] receives the read-receipt webhook and
//! flushes it into the data set as a live run of its own. Text from outside passes through
//! [`untrusted`]; every retry loop waits by [`backoff`]; [`memory`] tunes the allocator once,
//! at start.
//!
//! The arrows point one way: commands → schedule, ops → run → sink, chat, tracking → plan,
//! settings; no module reaches one that reaches it back (`cargo test --test arrows`).

pub mod backoff;
pub mod chat;
pub mod cli;
pub mod commands;
pub mod crashpoint;
pub mod db;
pub mod exit;
pub mod files;
pub mod lake;
pub mod listen;
pub mod memory;
pub mod ops;
pub mod plan;
pub mod report;
pub mod run;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod sim;
pub mod sink;
pub mod text;
pub mod tracking;
pub mod untrusted;
