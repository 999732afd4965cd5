//! The downloads of a build besides Flatcar (Kubernetes binaries, CNI plugins,
//! crictl, containerd, PyPy), made once on the host: the list of one build as a pure
//! function of its variables (`list`, PyPy's published checksum in `pypy`), the
//! checksum formats upstreams publish (`checksum`), the verified cache beside the
//! image cache (`cache`), the parallel verified fetch into it (`fetch`), and the one
//! mirror layout, upstream host and path below a base URL (`layout`).

pub mod cache;
pub mod checksum;
pub mod fetch;
pub mod layout;
pub mod list;
pub mod pypy;

pub use cache::{served_files, Cached};
pub use fetch::fetch_all;
pub use list::{artifact_list, variables_at, Artifact, ChecksumSource};
pub use pypy::{pypy, Pypy, PypyDefaults};
