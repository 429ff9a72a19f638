//! egress-monitor's agent: kernel loading, collection, attribution and output.
//!
//! Data flows one way: kernel maps -> [`collector`] (deltas, expiry) -> [`attribution`]
//! (owners) -> [`flow::FlowSample`] -> outputs (`run`, `top`).

pub mod agent;
pub mod alert_output;
pub mod attribution;
pub mod cli;
pub mod collector;
pub mod config;
pub mod contain;
pub mod detect;
pub mod detection;
pub mod doctor;
pub mod export;
pub mod flow;
pub mod kernel;
pub mod metrics;
pub mod output;
pub mod reload;
pub mod replay;
#[cfg(test)]
pub(crate) mod schema_check;
pub mod store;
pub mod top;
