//! The Flatcar release feed: channels and versions, the release server's files
//! (version.txt, DIGESTS), the OpenPGP check against the pinned image-signing key,
//! and a download cache that only ever holds verified files.
//!
//! Subcommands call [`fetch_image`] (and [`resolve_release`] to only resolve);
//! [`openpgp`] and [`download`] are generic enough for other signed downloads
//! (HashiCorp's releases for `deps --install`).

pub(crate) mod cache;
pub(crate) mod digests;
pub(crate) mod download;
pub(crate) mod fetch;
pub(crate) mod openpgp;
pub(crate) mod release;

pub(crate) use cache::default_cache_dir;
pub(crate) use fetch::{
    fetch_image, FetchOptions, SignaturePolicy, VerifiedImage, FLATCAR_SIGNING_KEY_URL,
};
pub(crate) use release::{
    Arch, Channel, ReleaseServer, Variant, VersionRequest, DEFAULT_RELEASE_SERVER,
};

// The rest of the API for `build-flatcar` and later callers; not every item is
// named by a caller yet.
#[allow(unused_imports)]
pub(crate) use fetch::{SignatureRecord, FLATCAR_SIGNING_KEY_FINGERPRINT};
#[allow(unused_imports)]
pub(crate) use release::{resolve_release, Release, Version, VersionInfo};
