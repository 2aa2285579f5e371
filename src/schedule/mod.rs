//! Jobs and schedules: job files ([`job`]), cron expressions ([`cron`]) and the scheduler that
//! fires jobs in-process ([`scheduler`]).
//!
//! Arrows point one way: this module uses `run` (a fire is one `run::execute`) and `settings`;
//! nothing below it knows about jobs. It prints nothing: the commands do.

pub mod cron;
pub mod job;
pub mod scheduler;

pub use job::{CatchUp, Job, JobError};
