//! The checks engine and what it looks at: which files of a checkout a run covers
//! (`source_tree`), and running independent checks in parallel with a cache of
//! passes, reported as a table or JSON (`engine`). What each check does lives with
//! its command (validate, lint).

pub mod engine;
pub mod source_tree;
