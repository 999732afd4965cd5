//! The checks engine and what it looks at: which files of a checkout a run covers
//! (`source_tree`), running independent checks in parallel (`engine`), what people
//! read of them (`render`), the printed report and exit status (`report`), what it remembers between runs
//! (`pass_cache`), and reading the output of the tools that checks run
//! (`tool_output`). The checks `validate` runs are `validate`; lint's own live with
//! its command.

pub mod engine;
pub mod pass_cache;
pub mod render;
pub mod report;
pub mod source_tree;
pub mod tool_output;
pub mod validate;
