//! Generic network trust: an HTTP client with retries, resume and progress
//! (`download`), and OpenPGP signature checks bound to a pinned primary key
//! (`openpgp`). Flatcar releases and HashiCorp's releases both use them. Credentials
//! in URLs are hidden from anything printed or logged (`credentials`).

pub mod credentials;
pub mod download;
pub mod file_server;
pub mod openpgp;
