//! (module under construction)
pub mod describe;
