//! (module under construction)
pub mod attention_share;
pub mod autocdsr;
