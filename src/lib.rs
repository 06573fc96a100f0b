pub mod events;
pub mod probes;
pub mod protocols;
