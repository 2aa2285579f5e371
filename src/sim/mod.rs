//! The Chat API simulator.
