//! axum 0.8 extractors (feature `axum`). Being written.
