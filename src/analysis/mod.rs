//! The paper's statistics over runs: orthogonality of cross-attention outputs, correlation and
//! significance tests, parameter-matched comparisons, AutoCDSR attention shares, and the
//! per-test-case association of orthogonality with accuracy ([`cases`]).
pub mod attention;
pub mod cases;
pub mod describe;
pub mod gca_tensors;
pub mod orthogonality;
pub mod param_match;
pub mod seed_means;
pub mod stats;
pub mod study;
