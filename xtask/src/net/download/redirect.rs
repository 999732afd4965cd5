//! Which redirects are followed: a few, resolved against the URL that sent them,
//! and never from https down to plain http.

use super::retry::{classify, status_line, Failure};
use super::HttpClient;

/// More redirects than a mirror setup needs are a loop or a detour.
pub const MAX_REDIRECTS: usize = 3;

/// Where a redirect from `from` to `location` leads: `location` resolved
/// against `from` (absolute, `//host/...`, `/path` or a relative path). An
/// https URL may only lead to https: a downgrade would let anyone on the path
/// serve the bytes (and see what is asked).
pub fn redirect_target(from: &str, location: &str) -> Result<String, String> {
    let (scheme, rest) = from
        .split_once("://")
        .ok_or_else(|| format!("{from} is not an absolute URL"))?;
    let location = location.trim();
    let target = if location.contains("://") {
        location.to_owned()
    } else if let Some(authority_path) = location.strip_prefix("//") {
        format!("{scheme}://{authority_path}")
    } else {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        if location.starts_with('/') {
            format!("{scheme}://{authority}{location}")
        } else {
            let path = rest.split(['?', '#']).next().unwrap_or(rest);
            let dir = &path[..path.rfind('/').map_or(path.len(), |i| i + 1)];
            let dir = if dir == authority {
                format!("{dir}/")
            } else {
                dir.to_owned()
            };
            format!("{scheme}://{dir}{location}")
        }
    };
    let target_scheme = target
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match (
        scheme.to_ascii_lowercase().as_str(),
        target_scheme.as_deref(),
    ) {
        ("https", Some("https")) | ("http", Some("http" | "https")) => Ok(target),
        ("https", Some("http")) => Err(format!(
            "refusing the redirect from https to plain http ({target}): the download would \
             lose its transport security; fix the mirror or use its https URL"
        )),
        _ => Err(format!(
            "refusing the redirect to {target}: only http(s) is followed"
        )),
    }
}

impl HttpClient {
    /// GETs `url`, following at most [`MAX_REDIRECTS`] redirects and never from
    /// https to http. Returns the response and the URL that gave it.
    pub(super) fn request(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<(ureq::http::Response<ureq::Body>, String), Failure> {
        let mut current = url.to_owned();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.agent.get(&current);
            if range_from > 0 {
                request = request.header("Range", format!("bytes={range_from}-"));
            }
            let response = request.call().map_err(|err| classify(&current, err))?;
            if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok((response, current));
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    Failure::Permanent(anyhow::anyhow!(
                        "{current} answered {} without a Location to go to",
                        status_line(response.status())
                    ))
                })?;
            current = redirect_target(&current, location)
                .map_err(|reason| Failure::Permanent(anyhow::anyhow!("{url}: {reason}")))?;
        }
        Err(Failure::Permanent(anyhow::anyhow!(
            "{url} redirected more than {MAX_REDIRECTS} times (last to {current}); \
             a release server does not need that many: check the URL or the mirror"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finding_5_redirects_resolve_and_never_downgrade_to_http() {
        let from = "https://mirror.example/stable/amd64-usr/1.2.3/f.img?x=1";
        assert_eq!(
            redirect_target(from, "https://cdn.example/f.img").as_deref(),
            Ok("https://cdn.example/f.img")
        );
        assert_eq!(
            redirect_target(from, "//cdn.example/a/f.img").as_deref(),
            Ok("https://cdn.example/a/f.img")
        );
        assert_eq!(
            redirect_target(from, "/other/f.img").as_deref(),
            Ok("https://mirror.example/other/f.img")
        );
        assert_eq!(
            redirect_target(from, "g.img").as_deref(),
            Ok("https://mirror.example/stable/amd64-usr/1.2.3/g.img")
        );
        assert_eq!(
            redirect_target("http://h:8080", "x").as_deref(),
            Ok("http://h:8080/x")
        );
        assert_eq!(
            redirect_target("http://h/a", "https://h/b").as_deref(),
            Ok("https://h/b")
        );
        let downgrade = redirect_target(from, "http://cdn.example/f.img").unwrap_err();
        assert!(
            downgrade.contains("from https to plain http"),
            "{downgrade}"
        );
        assert!(redirect_target(from, "HTTP://cdn.example/f.img").is_err());
        assert!(redirect_target(from, "file:///etc/passwd").is_err());
        assert!(redirect_target(from, "ftp://x/f").is_err());
    }
}
