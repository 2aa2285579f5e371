//! Integration tests: one binary (one link), a module per area.
//! Each test gets its own fresh database on the local Postgres and talks to the real binary,
//! the simulator over HTTP on 127.0.0.1, or the library, never to mocks of our own traits.

mod apps;
mod backfill;
mod cli;
mod client;
mod cluster;
mod details;
mod engines;
mod export;
mod faults;
mod fencing;
mod follow;
mod helpers;
mod hostile;
mod iceberg;
mod jobs;
mod lake;
mod lakes;
mod listen;
mod migrations;
mod ops;
mod outside;
mod paged;
mod progress;
mod pull;
mod report;
mod retention;
mod roles;
mod run;
mod s3;
mod s3_lake;
mod schedule;
mod secrets;
mod sim;
mod sink;
mod tools;
mod track;
mod truth;
mod upgrade;
mod warehouse_lock;
