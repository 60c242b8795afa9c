//! actix-web 4 middleware, extractors and guard (feature `actix-web`). Being written.
