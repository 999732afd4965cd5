//! Terminal escape sequences in the output of other programs: some colour their
//! output even into a pipe (rustfmt's diffs, ansible-lint's version), and what we
//! parse or show must not carry them.

/// `text` without terminal escape sequences: CSI sequences (colours, cursor
/// movement: `ESC [` parameters, then a final letter) and character set
/// selections (`ESC ( B`).
pub fn strip(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('[') => {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            Some('(' | ')') => {
                chars.next();
                chars.next();
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip;

    #[test]
    fn colours_and_charset_selections_go() {
        assert_eq!(
            strip("\u{1b}[31m-  a\u{1b}(B\u{1b}[m\n+ b\u{1b}[0m"),
            "-  a\n+ b"
        );
        assert_eq!(
            strip("ansible-lint \u{1b}[1;36m6.13\u{1b}[0m\u{1b}[1;36m.\u{1b}[0m\u{1b}[1;36m1\u{1b}[0m"),
            "ansible-lint 6.13.1"
        );
        assert_eq!(strip("plain [text]"), "plain [text]");
    }
}
