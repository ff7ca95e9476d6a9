//! cdsr-lab as one Rust `dylib` for the notebooks' evcxr kernel: everything the library
//! exports, re-exported, so a notebook that depends on this crate under the name `cdsr-lab`
//! reads as one that depends on the library itself. The library and all its dependencies
//! are linked into this crate's shared library; evcxr's cells link against it instead of
//! copying the code they reach into every cell's library.
pub use cdsr_lab::*;
