//! The export run.
