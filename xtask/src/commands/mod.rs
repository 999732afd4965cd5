//! One module per `cargo xtask` subcommand, each with one `run` entry point. They
//! compose the library modules below; nothing below imports them.

pub mod bake;
pub mod bench;
pub mod boxes;
pub mod build_flatcar;
pub mod deps;
pub mod fetch_image;
pub mod install_hook;
pub mod lint;
pub mod mirror;
pub mod pre_commit;
pub mod rehearse;
pub mod rehearse_guest;
pub mod test;
pub mod validate;
pub mod verify_vagrant;
