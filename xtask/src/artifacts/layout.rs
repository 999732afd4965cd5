//! Where a download sits in a mirror: below one base URL, at its upstream host and
//! path, so that one base URL stands in for every upstream host and a mirror URL
//! reads like the original. The `mirror` tree, the build's own server and the test
//! bed's mirror all use this one layout.

use anyhow::{bail, Context};

/// Where a URL's file sits in the mirror: its host, then its path
/// (`https://dl.k8s.io/release/x` is `dl.k8s.io/release/x`).
pub fn mirror_path(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .with_context(|| format!("`{url}` is not an http(s) URL"))?;
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    // Credentials are the upstream's business, never part of a mirror path.
    let rest = match rest.split_once('/') {
        Some((authority, path)) => format!("{}/{path}", host_of(authority)),
        None => host_of(rest).to_owned(),
    };
    let path = rest.trim_end_matches('/');
    if path.is_empty() || path.split('/').any(|part| part.is_empty() || part == "..") {
        bail!("`{url}` has no plain file path to mirror");
    }
    Ok(path.to_owned())
}

fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// `url` as the mirror at `base` serves it: `<base>/<mirror_path(url)>`.
pub fn at_base(base: &str, url: &str) -> anyhow::Result<String> {
    Ok(format!(
        "{}/{}",
        base.trim_end_matches('/'),
        mirror_path(url)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_paths() {
        assert_eq!(
            mirror_path("https://dl.k8s.io/release/").unwrap(),
            "dl.k8s.io/release"
        );
        assert_eq!(mirror_path("http://h/a/b?x=1").unwrap(), "h/a/b");
        assert_eq!(
            mirror_path("http://user:secret@h:8080/a").unwrap(),
            "h:8080/a"
        );
        assert!(mirror_path("ftp://h/a").is_err());
        assert!(mirror_path("https://h/a/../b").is_err());
        assert!(mirror_path("https://").is_err());
    }

    #[test]
    fn urls_at_a_base() {
        assert_eq!(
            at_base("http://10.0.2.2:8080/", "https://dl.k8s.io/release").unwrap(),
            "http://10.0.2.2:8080/dl.k8s.io/release"
        );
    }
}
