//! The wardlink gateway daemon.

pub mod pipeline;
