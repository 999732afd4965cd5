//! The test bed: stand-ins for what is not reachable from this machine (Flatcar,
//! Kubernetes, PyPy downloads), used by the rehearsal, the benchmarks and the
//! integration tests alike. The one loopback file server with its fault modes
//! (`server`), the one OpenPGP signer (`signer`), the one builder of Flatcar-shaped
//! release trees (`release_tree`); for the rehearsal, a Flatcar-shaped guest disk
//! image (`guest`), the download stand-ins (`downloads`), what a loopback mirror
//! serves (`mirror`), and booting a disk image the way build-flatcar boots Flatcar
//! (`boot`).
//!
//! Everything here feeds the real build through the inputs any user can set (release
//! server, signing key, download URLs); no build code path knows it is rehearsing.

pub mod baked;
pub mod boot;
pub mod disk;
pub mod downloads;
pub mod guest;
pub mod mirror;
pub mod oem;
pub mod platform_images;
pub mod release_tree;
pub mod server;
pub mod signer;
pub mod test_sysext;

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
