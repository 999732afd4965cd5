//! The Packer side of a build, as data: the build targets (template + ordered var
//! files + what the build supplies), the template and var-file model, layering with
//! its variable checks, and the packer command line. No I/O beyond reading the files;
//! running packer is the caller's job.

pub mod command;
pub mod layering;
pub mod targets;
pub mod template;
