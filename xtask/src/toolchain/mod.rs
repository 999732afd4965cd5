//! The external tools the project drives: the tool table (finding, versions,
//! minimums, install hints, the packages that provide them) and the project-local
//! toolchain's layout under `.local/`. Installing them is `crate::install`'s job.

pub mod layout;
pub mod tools;
