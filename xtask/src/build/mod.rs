//! A build apart from running Packer: its plan (what `--dry-run` prints), the
//! per-build SSH key, the first-boot Ignition config that authorizes it, and the
//! build record.

pub mod ignition;
pub mod key;
pub mod plan;
pub mod record;
