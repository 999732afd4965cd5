//! Credentials in URLs (`https://user:token@mirror.example/...`): a site's mirror
//! may need them, but no log, plan or message may repeat them. This module hides
//! the user-info part of every URL in a text.

use std::borrow::Cow;

/// What stands in for the user-info of a URL.
const HIDDEN: &str = "***";

/// `text` with the user-info (`user:password@`) of every URL in it replaced by
/// `***@`. A URL is anything after `scheme://`; its authority ends at the first
/// `/`, `?`, `#`, white space or quote.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`') || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str(HIDDEN);
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_user_info_and_keeps_the_rest() {
        assert_eq!(
            redact("GET https://alice:s3cr%40t@mirror.example:8443/k8s/v1.36.2/kubeadm?x=1 failed"),
            "GET https://***@mirror.example:8443/k8s/v1.36.2/kubeadm?x=1 failed"
        );
        assert_eq!(
            redact("\"url\": \"http://token@10.0.2.2/a\", ftp://b:c@d"),
            "\"url\": \"http://***@10.0.2.2/a\", ftp://***@d"
        );
        // No user-info, or an @ outside the authority: unchanged.
        for plain in [
            "http://mirror.example/a@b",
            "mail root@example.com",
            "https://x.example",
            "",
        ] {
            assert_eq!(redact(plain), plain);
        }
    }
}
