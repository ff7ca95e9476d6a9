//! (module under construction)
pub mod pareto;
