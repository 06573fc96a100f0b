//! netsonde: an eBPF agent that turns every process's network traffic into telemetry.
//!
//! Data flows one way: [`probes`] (the kernel side) → [`events`] (decoded records) →
//! [`connections`] (per-connection streams, running [`protocols`] parsers) → [`telemetry`]
//! (records with wall-clock time) → [`export`]. [`agent`] is the only module that wires them;
//! `docs/architecture.md` describes the whole journey.

pub mod agent;
pub mod attribution;
pub mod config;
pub mod connections;
pub mod events;
pub mod export;
pub mod probes;
pub mod protocols;
pub mod telemetry;
