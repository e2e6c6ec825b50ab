//! The TCP engine: a sans-IO, Linux-compatible TCP.
