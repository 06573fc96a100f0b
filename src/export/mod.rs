//! Delivers telemetry. For now: the console.

pub mod console;
