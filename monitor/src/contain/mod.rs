//! Containment: throttling or blocking, in the kernel, the traffic of one service to a peer
//! it flagged, under safety rails. [`settings`] is `[containment]`, [`record`] what is stored
//! and exported, [`policy`] the decisions (pure), [`kernel`] the maps the egress program
//! enforces from.

pub mod kernel;
pub mod policy;
pub mod record;
pub mod settings;

#[cfg(test)]
mod tests;
