//! The rehearsal's own inputs, made on this machine because no Flatcar, Kubernetes
//! or PyPy download is reachable from it: a Flatcar-shaped guest disk image
//! (`guest`), the files a loopback mirror serves in place of the release server and
//! the download sites (`mirror`), a static-file HTTP server for them (`server`), and
//! booting a disk image the way build-flatcar boots Flatcar (`boot`).
//!
//! Everything here feeds the real build through the inputs any user can set (release
//! server, signing key, download URLs); no build code path knows it is rehearsing.

pub mod boot;
pub mod guest;
pub mod mirror;
pub mod server;

use std::path::PathBuf;

/// The made-up Flatcar release the guest claims to be and the mirror serves: the
/// shape of a real version, far beyond any real one.
pub const FLATCAR_VERSION: &str = "9999.0.0";

/// Where rehearsal artifacts are cached between runs.
pub fn cache_dir() -> PathBuf {
    crate::workspace::project_root()
        .join("target")
        .join("rehearsal")
}
