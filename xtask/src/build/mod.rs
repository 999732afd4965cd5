//! What a build prepares and leaves behind, apart from Packer: the per-build SSH
//! key, the first-boot Ignition config that authorizes it, and the build record.

pub mod ignition;
pub mod key;
pub mod record;
