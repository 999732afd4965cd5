//! The external tools the project drives: the tool table (finding, versions,
//! minimums, install hints), the project-local toolchain's layout under `.local/`,
//! and installing it.

pub mod install;
pub mod layout;
pub mod tools;
