//! wardlink's configuration (placeholder; see the config issue).
