//! The wardlink gateway daemon.
