//! tower Layer + Service (feature `tower`). Being written.
