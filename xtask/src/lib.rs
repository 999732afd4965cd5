//! The library behind `cargo xtask`: everything the subcommands, the integration
//! tests, the benchmarks and the rehearsal share. Subcommands live in `commands`;
//! the folders below it are concepts (the release feed, the network, the Packer
//! model, the checks engine, VMs, the toolchain, the test bed); the single files
//! are small pieces every layer may use.

pub mod ansi;
pub mod artifacts;
pub mod bake;
pub mod build;
pub mod checks;
pub mod commands;
pub mod disk_formats;
pub mod disk_image;
pub mod error;
pub mod flatcar;
pub mod fsx;
pub mod hex;
pub mod install;
pub mod json_text;
pub mod measure;
pub mod nested_cargo;
pub mod net;
pub mod node_files;
pub mod output;
pub mod packer;
pub mod prompt;
pub mod rules;
pub mod sysext;
pub mod table;
pub mod testbed;
pub mod toolchain;
pub mod utc;
pub mod vm;
pub mod workspace;
