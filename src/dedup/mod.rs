//! Deduplication by message id. Being written.
