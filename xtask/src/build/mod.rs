//! A build's pieces below the command: its plan (what `--dry-run` prints), the
//! per-build SSH key, the first-boot Ignition config that authorizes it, the work
//! directory that holds them, the packer run and where its time went, the output
//! directory and the build record.

pub mod ignition;
pub mod key;
pub mod output_dir;
pub mod packer_run;
pub mod plan;
pub mod record;
pub mod timeline;
pub mod work_dir;
