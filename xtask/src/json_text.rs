//! JSON as text, for people: where a parse error is (line, column and the offending
//! line), where each string and key sits in a file (so a Packer variable is reported
//! by line), duplicate keys, and the canonical formatting every JSON file under
//! images/capi keeps. Values themselves are serde_json's.

use serde_json::Value;

/// A place in a text file; both numbers start at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A JSON syntax error, with the line it is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub position: Position,
    /// What is wrong, without serde_json's "at line L column C" suffix.
    pub message: String,
    /// The offending line and a caret under the column, ready to print.
    pub excerpt: String,
}

/// Parses `text`; a syntax error says where it is. An integer too big for 64 bits
/// is an error too: serde_json, Packer and Ignition would all read it as something
/// else (a float, an overflow), and canonical formatting would change it.
pub fn parse(text: &str) -> Result<Value, ParseError> {
    let value = parse_syntax(text)?;
    for (token, position) in scan(text).numbers {
        let integer = !token.contains(['.', 'e', 'E']);
        if integer && token.parse::<i64>().is_err() && token.parse::<u64>().is_err() {
            return Err(ParseError {
                excerpt: excerpt(text, position),
                position,
                message: format!(
                    "the integer {token} does not fit in 64 bits; write it as a string"
                ),
            });
        }
    }
    Ok(value)
}

fn parse_syntax(text: &str) -> Result<Value, ParseError> {
    serde_json::from_str(text).map_err(|err| {
        let full = err.to_string();
        let message = match full.rfind(" at line ") {
            Some(at) => full[..at].to_owned(),
            None => full,
        };
        // serde_json counts the line of an error at the end of input past the last
        // newline, with column 0; point at the last character instead.
        let lines: Vec<&str> = text.lines().collect();
        let mut line = err.line().max(1);
        let mut column = err.column();
        if line > lines.len() && !lines.is_empty() {
            line = lines.len();
            column = lines[line - 1].chars().count() + 1;
        }
        let position = Position {
            line,
            column: column.max(1),
        };
        ParseError {
            excerpt: excerpt(text, position),
            position,
            message,
        }
    })
}

/// The line at `position` with a caret under its column, indented for a report.
pub fn excerpt(text: &str, position: Position) -> String {
    let line = text.lines().nth(position.line - 1).unwrap_or("");
    let number = position.line.to_string();
    let pad = " ".repeat(number.len());
    // Keep tabs as tabs so the caret lines up under them.
    let lead: String = line
        .chars()
        .take(position.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("{number} | {line}\n{pad} | {lead}^")
}

/// The canonical text of a JSON value: 2-space indent, keys sorted, one key per
/// line, non-ASCII kept as UTF-8, and a trailing newline: byte for byte what
/// `json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"` gives
/// in Python, decimals included (`1e-07`, `2.5e-05`, `1e+16`, `3.0`).
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_canonical(out: &mut String, value: &Value, depth: usize) {
    let indent = |out: &mut String, depth: usize| out.extend(std::iter::repeat_n("  ", depth));
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => out.push_str(&i.to_string()),
            (None, Some(u), _) => out.push_str(&u.to_string()),
            (None, None, Some(f)) => out.push_str(&python_float(f)),
            (None, None, None) => out.push_str(&n.to_string()),
        },
        Value::String(s) => out.push_str(&quoted(s)),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                indent(out, depth + 1);
                write_canonical(out, item, depth + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push(']');
        }
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            // serde_json's map is a BTreeMap (no `preserve_order`): sorted by key
            // bytes, which for UTF-8 is Python's order by code point.
            for (i, (key, item)) in map.iter().enumerate() {
                indent(out, depth + 1);
                out.push_str(&quoted(key));
                out.push_str(": ");
                write_canonical(out, item, depth + 1);
                out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
            }
            indent(out, depth);
            out.push('}');
        }
    }
}

/// A JSON string literal: `"`, `\\` and control characters escaped (`\n`, `\u001f`),
/// everything else as it is, as Python writes it with `ensure_ascii=False`.
fn quoted(s: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(s).expect("serialising a string")
}

/// A float as Python's `repr` writes it: the shortest digits that read back the
/// same, positional from 1e-4 up to 1e16, otherwise with a signed exponent of at
/// least two digits.
fn python_float(f: f64) -> String {
    // Rust's `{:e}` gives the same shortest digits: `2.5e-5`, `1e21`, `-0e0`.
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always has an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` exponents are integers");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    // Python's decimal point position: the value is 0.DIGITS x 10^point.
    let point = exponent + 1;
    let body = if point <= -4 || point > 16 {
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{first}{fraction}e{exponent_sign}{:02}", exponent.abs())
    } else if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if (point as usize) < digits.len() {
        let (whole, fraction) = digits.split_at(point as usize);
        format!("{whole}.{fraction}")
    } else {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    };
    format!("{sign}{body}")
}

/// The first line (1-based) where `actual` and `expected` differ.
pub fn first_difference(actual: &str, expected: &str) -> Option<usize> {
    if actual == expected {
        return None;
    }
    let mut a = actual.split_inclusive('\n');
    let mut e = expected.split_inclusive('\n');
    let mut line = 1;
    loop {
        match (a.next(), e.next()) {
            (Some(x), Some(y)) if x == y => line += 1,
            _ => return Some(line),
        }
    }
}

/// One step into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// A string of a JSON file, as a key or as a value, and where it is.
#[derive(Clone, Debug)]
pub struct JsonString {
    /// For a value: the path to it. For a key: the path to the object holding it.
    pub path: Vec<Segment>,
    pub is_key: bool,
    /// The decoded string.
    pub value: String,
    /// The opening quote.
    pub position: Position,
    /// The column of the raw character behind each byte of `value`.
    columns: Vec<usize>,
}

impl JsonString {
    /// Where the byte at `offset` of the decoded string is in the file.
    pub fn position_at(&self, offset: usize) -> Position {
        Position {
            line: self.position.line,
            column: self
                .columns
                .get(offset)
                .copied()
                .unwrap_or(self.position.column + 1),
        }
    }

    /// Whether this is the key `name` of the object at `path`.
    pub fn is_key_at(&self, path: &[&str], name: &str) -> bool {
        self.is_key && self.value == name && segments_are(&self.path, path)
    }
}

/// Whether `segments` are exactly the object keys `keys`.
pub fn segments_are(segments: &[Segment], keys: &[&str]) -> bool {
    segments.len() == keys.len()
        && segments
            .iter()
            .zip(keys)
            .all(|(s, k)| matches!(s, Segment::Key(key) if key == k))
}

/// A key that appears twice in one object; the last one wins in Packer and
/// serde_json alike, silently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    pub key: String,
    pub position: Position,
    pub first: Position,
}

/// Every string and number of a JSON text with its position, and its duplicate keys.
#[derive(Debug, Default)]
pub struct Scan {
    pub strings: Vec<JsonString>,
    pub duplicate_keys: Vec<DuplicateKey>,
    /// Each number as written.
    pub numbers: Vec<(String, Position)>,
}

impl Scan {
    /// Where the key `name` of the object at `path` is.
    pub fn key_position(&self, path: &[&str], name: &str) -> Option<Position> {
        self.strings
            .iter()
            .find(|s| s.is_key_at(path, name))
            .map(|s| s.position)
    }

    /// Where the string value at `path` is.
    pub fn value_position(&self, path: &[Segment]) -> Option<Position> {
        self.strings
            .iter()
            .find(|s| !s.is_key && s.path == path)
            .map(|s| s.position)
    }
}

/// Finds every string of `text` with its position. Meant for text that parses; on
/// anything else it stops at the first surprise and returns what it found so far.
pub fn scan(text: &str) -> Scan {
    let mut scanner = Scanner {
        chars: text.chars().collect(),
        at: 0,
        line: 1,
        column: 1,
        path: Vec::new(),
        scan: Scan::default(),
    };
    let _ = scanner.value();
    scanner.scan
}

struct Scanner {
    chars: Vec<char>,
    at: usize,
    line: usize,
    column: usize,
    path: Vec<Segment>,
    scan: Scan,
}

/// The scanner gave up: the text is not JSON.
struct Malformed;

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.at += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), Malformed> {
        self.skip_whitespace();
        if self.bump() == Some(wanted) {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    fn value(&mut self) -> Result<(), Malformed> {
        self.skip_whitespace();
        match self.peek().ok_or(Malformed)? {
            '{' => self.object(),
            '[' => self.array(),
            '"' => {
                let string = self.string(false)?;
                self.scan.strings.push(string);
                Ok(())
            }
            first => {
                // A number, true, false or null.
                let position = Position {
                    line: self.line,
                    column: self.column,
                };
                let mut token = String::new();
                while let Some(c) = self
                    .peek()
                    .filter(|c| !matches!(c, ',' | '}' | ']' | ' ' | '\t' | '\n' | '\r'))
                {
                    token.push(c);
                    self.bump();
                }
                if first == '-' || first.is_ascii_digit() {
                    self.scan.numbers.push((token, position));
                }
                Ok(())
            }
        }
    }

    fn object(&mut self) -> Result<(), Malformed> {
        self.expect('{')?;
        let mut seen: Vec<(String, Position)> = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some('}') {
            self.bump();
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.string(true)?;
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key.value) {
                self.scan.duplicate_keys.push(DuplicateKey {
                    key: key.value.clone(),
                    position: key.position,
                    first: *first,
                });
            }
            seen.push((key.value.clone(), key.position));
            let name = key.value.clone();
            self.scan.strings.push(key);
            self.expect(':')?;
            self.path.push(Segment::Key(name));
            let result = self.value();
            self.path.pop();
            result?;
            self.skip_whitespace();
            match self.bump() {
                Some(',') => continue,
                Some('}') => return Ok(()),
                _ => return Err(Malformed),
            }
        }
    }

    fn array(&mut self) -> Result<(), Malformed> {
        self.expect('[')?;
        self.skip_whitespace();
        if self.peek() == Some(']') {
            self.bump();
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.path.push(Segment::Index(index));
            let result = self.value();
            self.path.pop();
            result?;
            self.skip_whitespace();
            match self.bump() {
                Some(',') => index += 1,
                Some(']') => return Ok(()),
                _ => return Err(Malformed),
            }
        }
    }

    fn string(&mut self, is_key: bool) -> Result<JsonString, Malformed> {
        let position = Position {
            line: self.line,
            column: self.column,
        };
        if self.bump() != Some('"') {
            return Err(Malformed);
        }
        let mut value = String::new();
        let mut columns = Vec::new();
        loop {
            let column = self.column;
            let c = self.bump().ok_or(Malformed)?;
            let decoded = match c {
                '"' => break,
                '\\' => match self.bump().ok_or(Malformed)? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'u' => {
                        let high = self.hex4()?;
                        if (0xD800..0xDC00).contains(&high) {
                            // A surrogate pair: `\uD83D\uDE00`.
                            if self.bump() != Some('\\') || self.bump() != Some('u') {
                                return Err(Malformed);
                            }
                            let low = self.hex4()?;
                            let code =
                                0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00));
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        } else {
                            char::from_u32(high).unwrap_or('\u{fffd}')
                        }
                    }
                    other => other,
                },
                c => c,
            };
            value.push(decoded);
            columns.extend(std::iter::repeat_n(column, decoded.len_utf8()));
        }
        Ok(JsonString {
            path: self.path.clone(),
            is_key,
            value,
            position,
            columns,
        })
    }

    fn hex4(&mut self) -> Result<u32, Malformed> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = self.bump().and_then(|c| c.to_digit(16)).ok_or(Malformed)?;
            code = code * 16 + digit;
        }
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_line_and_column() {
        let text = "{\n  \"a\": \"x\",\n  \"b\": \"y\",\n}\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.message, "trailing comma");
        assert_eq!(err.position, Position { line: 4, column: 1 });
        expect_test::expect![[r#"
            4 | }
              | ^"#]]
        .assert_eq(&err.excerpt);
    }

    #[test]
    fn parse_error_at_end_of_input_points_at_the_last_line() {
        let err = parse("{\n  \"a\": \"x\"\n").unwrap_err();
        assert_eq!(err.message, "EOF while parsing an object");
        assert_eq!(
            err.position,
            Position {
                line: 2,
                column: 11
            }
        );
    }

    #[test]
    fn parse_error_on_a_missing_comma() {
        let err = parse("{\n  \"a\": \"x\"\n  \"b\": 1\n}\n").unwrap_err();
        assert_eq!(err.message, "expected `,` or `}`");
        assert_eq!(err.position, Position { line: 3, column: 3 });
    }

    #[test]
    fn scan_finds_keys_values_and_their_positions() {
        let text = "{\n  \"variables\": {\n    \"a\": \"x-{{user `b`}}\",\n    \"b\": null\n  },\n  \"builders\": [{\"type\": \"qemu\"}]\n}\n";
        let scan = scan(text);
        assert_eq!(
            scan.key_position(&["variables"], "b"),
            Some(Position { line: 4, column: 5 })
        );
        let a = scan
            .strings
            .iter()
            .find(|s| !s.is_key && segments_are(&s.path, &["variables", "a"]))
            .unwrap();
        assert_eq!(a.value, "x-{{user `b`}}");
        assert_eq!(
            a.position,
            Position {
                line: 3,
                column: 10
            }
        );
        // The `{{` is two characters after the opening quote and `x-`.
        assert_eq!(
            a.position_at(2),
            Position {
                line: 3,
                column: 13
            }
        );
        assert_eq!(
            scan.value_position(&[
                Segment::Key("builders".into()),
                Segment::Index(0),
                Segment::Key("type".into())
            ]),
            Some(Position {
                line: 6,
                column: 25
            })
        );
    }

    #[test]
    fn scan_decodes_escapes_and_keeps_columns() {
        let scan = scan(r#"{"k": "a\"\u00e9\ud83d\ude00b"}"#);
        let s = scan.strings.iter().find(|s| !s.is_key).unwrap();
        assert_eq!(s.value, "a\"é😀b");
        // `b` is the last byte; its raw column is after the two escapes.
        assert_eq!(s.position_at(s.value.len() - 1).column, 29);
    }

    #[test]
    fn scan_reports_duplicate_keys() {
        let scan = scan("{\n  \"a\": 1,\n  \"a\": 2\n}");
        assert_eq!(
            scan.duplicate_keys,
            vec![DuplicateKey {
                key: "a".into(),
                position: Position { line: 3, column: 3 },
                first: Position { line: 2, column: 3 },
            }]
        );
    }

    #[test]
    fn canonical_form_matches_pythons_json_dumps() {
        // Expected text produced by
        // `json.dumps(json.loads(s), indent=2, sort_keys=True, ensure_ascii=False) + "\n"`.
        let source = r#"{"zeta": [1, 2.5, -3, 1e3, 0.1, true, null], "alpha": {"b": "Zürich ✓ 😀", "a": {}}, "empty": [], "ctl": "tab\there\u0001", "Big": 18446744073709551615}"#;
        let value = parse(source).unwrap();
        expect_test::expect![[r#"
            {
              "Big": 18446744073709551615,
              "alpha": {
                "a": {},
                "b": "Zürich ✓ 😀"
              },
              "ctl": "tab\there\u0001",
              "empty": [],
              "zeta": [
                1,
                2.5,
                -3,
                1000.0,
                0.1,
                true,
                null
              ]
            }
        "#]]
        .assert_eq(&canonical(&value));
    }

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Each pair: what Python's `repr(float(text))` gives.
        for (text, python) in [
            ("2.5e-5", "2.5e-05"),
            ("1e-7", "1e-07"),
            ("0.0001", "0.0001"),
            ("0.00001", "1e-05"),
            ("1e16", "1e+16"),
            ("1e15", "1000000000000000.0"),
            ("12345.678e3", "12345678.0"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
            ("-0.0", "-0.0"),
            ("0.0", "0.0"),
            ("3.0", "3.0"),
            ("-1.5", "-1.5"),
            ("123.456", "123.456"),
            ("1e21", "1e+21"),
            ("5e-324", "5e-324"),
        ] {
            let value: f64 = text.parse().unwrap();
            assert_eq!(python_float(value), python, "{text}");
        }
    }

    #[test]
    fn integers_beyond_64_bits_are_refused() {
        let err = parse("{\n  \"big\": 18446744073709551616\n}").unwrap_err();
        assert_eq!(
            err.position,
            Position {
                line: 2,
                column: 10
            }
        );
        assert!(err.message.contains("does not fit in 64 bits"));
        assert!(parse("[18446744073709551615, -9223372036854775808, 1e400]").is_err());
        assert!(parse("[18446744073709551615, -9223372036854775808, 1e300]").is_ok());
    }

    #[test]
    fn first_difference_is_a_line_number() {
        assert_eq!(first_difference("a\nb\n", "a\nb\n"), None);
        assert_eq!(first_difference("a\nb\n", "a\nc\n"), Some(2));
        assert_eq!(first_difference("a\nb", "a\nb\n"), Some(2));
    }
}
