//! How long and how much one download may take.

use std::time::Duration;

/// How long and how much one download may take, so that neither an endless
/// stream nor a trickle can hold a run (or fill a disk) for ever.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes a download may have, announced or not.
    pub max_size: u64,
    /// No byte for this long ends an attempt (retried like a broken connection).
    pub stall_timeout: Duration,
    /// The whole download, retries included, ends after this.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // Flatcar's QEMU images are about 0.5-1.5 GiB; ten times that is a bug or an attack.
            max_size: 16 << 30,
            stall_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(6 * 3600),
        }
    }
}
