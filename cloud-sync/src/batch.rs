//! The batch format: filled in by the next commit.
