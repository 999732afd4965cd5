//! The Flatcar release feed: channels and versions, the release server's files
//! (version.txt, DIGESTS), the OpenPGP check against the pinned image-signing key,
//! and a download cache that only ever holds verified files.
//!
//! Subcommands call [`resolve`] once, then [`fetch_image`] with the release it
//! found; the generic HTTP and OpenPGP pieces live in [`crate::net`].

pub mod cache;
pub mod digests;
pub mod fetch;
pub mod platform;
pub mod release;

pub use cache::default_cache_dir;
pub use fetch::{
    fetch_image, resolve, FetchOptions, SignaturePolicy, VerifiedImage, FLATCAR_SIGNING_KEY_URL,
};
pub use release::{
    Arch, Channel, Release, ReleaseServer, Variant, Version, VersionRequest, DEFAULT_RELEASE_SERVER,
};
