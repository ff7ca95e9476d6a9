//! The paper's statistics over runs: orthogonality of cross-attention outputs, correlation and
//! significance tests, parameter-matched comparisons, and AutoCDSR attention shares.
pub mod attention;
pub mod describe;
pub mod gca_tensors;
pub mod orthogonality;
pub mod param_match;
pub mod seed_means;
pub mod stats;
pub mod study;
