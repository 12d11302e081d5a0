//! Integration tests live in tests/it; [`fuzz`] holds the fuzzing entry points that
//! `fuzz/` drives and `tests/it/fuzz.rs` replays.

pub mod fuzz;
