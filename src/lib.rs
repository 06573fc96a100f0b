//! netsonde: an eBPF agent that turns every process's network traffic into telemetry.
//!
//! Data flows one way: [`probes`] (the kernel side) → [`events`] (decoded records) →
//! [`connections`] (per-connection streams, running [`protocols`] parsers) → [`telemetry`]
//! (records with wall-clock time) → [`export`]. [`agent`] is the only module that wires them;
//! `docs/architecture.md` describes the whole journey.
//!
//! Without the `agent` feature (on by default) only [`protocols`], [`events`] and [`config`]
//! are built: the fuzz targets need no more.

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "agent")]
pub mod attribution;
pub mod config;
#[cfg(feature = "agent")]
pub mod connections;
pub mod events;
#[cfg(feature = "agent")]
pub mod export;
#[cfg(feature = "agent")]
pub mod probes;
pub mod protocols;
#[cfg(feature = "agent")]
pub mod telemetry;

/// An error and its causes on one line, each said once (some errors repeat their source in
/// their own message): what a user reads.
pub fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}
