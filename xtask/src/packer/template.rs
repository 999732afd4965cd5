//! Packer JSON files as the checks see them: a template's variables, plugins and
//! Ansible provisioners, a var file's settings, and every `{{user `name`}}` and
//! `{{env `NAME`}}` with the line and column it is on.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::json_text::{self, Position, Scan, Segment};

/// A problem in a file of images/capi, at a place in it when that is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Relative to images/capi.
    pub file: String,
    pub position: Option<Position>,
    pub message: String,
}

impl Finding {
    pub fn at(file: &str, position: Option<Position>, message: impl Into<String>) -> Self {
        Finding {
            file: file.to_owned(),
            position,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Finding {
    /// `file:line:column: message`, as compilers print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A JSON file of images/capi, read and parsed.
#[derive(Debug)]
pub struct Document {
    /// Relative to images/capi.
    pub path: String,
    pub value: Value,
    pub scan: Scan,
}

/// Reads and parses `capi/path`; a missing, unreadable or broken file is a finding.
pub fn load(capi: &Path, path: &str) -> Result<Document, Finding> {
    let text = match std::fs::read_to_string(capi.join(path)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(Finding::at(path, None, "file does not exist"))
        }
        Err(err) => return Err(Finding::at(path, None, format!("cannot be read: {err}"))),
    };
    let value = json_text::parse(&text).map_err(|err| {
        Finding::at(
            path,
            Some(err.position),
            format!("not valid JSON: {}", err.message),
        )
    })?;
    Ok(Document {
        path: path.to_owned(),
        value,
        scan: json_text::scan(&text),
    })
}

/// A variable a template declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variable {
    /// `None`: declared as `null`, so Packer requires a value for it.
    pub default: Option<String>,
    pub position: Option<Position>,
}

/// Which section of a template a plugin is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginKind {
    Builder,
    Provisioner,
    PostProcessor,
}

impl PluginKind {
    /// How Packer's messages call it (`Unknown post-processor`).
    pub fn word(self) -> &'static str {
        match self {
            PluginKind::Builder => "builder",
            PluginKind::Provisioner => "provisioner",
            PluginKind::PostProcessor => "post-processor",
        }
    }
}

/// A builder, provisioner or post-processor of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plugin {
    pub kind: PluginKind,
    pub type_name: String,
    /// The builder's `name`, which Packer calls the build; defaults to its type.
    pub name: String,
    /// Where its `"type"` value is.
    pub position: Option<Position>,
}

/// What an `ansible` provisioner hands to ansible-playbook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnsibleProvisioner {
    /// Relative to images/capi, uninterpolated.
    pub playbook_file: String,
    pub extra_arguments: Vec<String>,
    /// `KEY=VALUE` settings for ansible's environment.
    pub env_vars: Vec<String>,
    pub user: Option<String>,
    /// The inventory host name (Packer's default: `default`).
    pub host_alias: String,
    pub groups: Vec<String>,
}

/// A Packer JSON template.
#[derive(Debug)]
pub struct Template {
    pub doc: Document,
    pub variables: BTreeMap<String, Variable>,
    pub plugins: Vec<Plugin>,
    pub ansible: Vec<AnsibleProvisioner>,
}

impl Template {
    /// Reads the template's structure; a variable default that is not a scalar is a
    /// finding (Packer turns numbers and booleans into strings, nothing else).
    pub fn from_document(doc: Document) -> (Template, Vec<Finding>) {
        let (variables, findings) = declared_variables(&doc);
        let plugins = plugins_of(&doc);
        let ansible = doc
            .value
            .get("provisioners")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("ansible"))
            .map(AnsibleProvisioner::from_value)
            .collect();
        (
            Template {
                doc,
                variables,
                plugins,
                ansible,
            },
            findings,
        )
    }

    /// The build name Packer gives the first builder (its `name`, else its type).
    pub fn first_builder(&self) -> Option<&Plugin> {
        self.plugins.iter().find(|p| p.kind == PluginKind::Builder)
    }
}

/// The template's `variables` with their defaults as Packer sees them (strings).
fn declared_variables(doc: &Document) -> (BTreeMap<String, Variable>, Vec<Finding>) {
    let mut findings = Vec::new();
    let mut variables = BTreeMap::new();
    let Some(declared) = doc.value.get("variables").and_then(Value::as_object) else {
        return (variables, findings);
    };
    for (name, default) in declared {
        let position = doc.scan.key_position(&["variables"], name);
        let default = match default {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Bool(_) | Value::Number(_) => Some(default.to_string()),
            Value::Array(_) | Value::Object(_) => {
                findings.push(Finding::at(
                    &doc.path,
                    position,
                    format!("variable `{name}` has a list or object as its default; Packer takes only strings"),
                ));
                Some(String::new())
            }
        };
        variables.insert(name.clone(), Variable { default, position });
    }
    (variables, findings)
}

/// Every builder, provisioner and post-processor, in the template's order.
fn plugins_of(doc: &Document) -> Vec<Plugin> {
    let mut plugins = Vec::new();
    for (section, kind) in [
        ("builders", PluginKind::Builder),
        ("provisioners", PluginKind::Provisioner),
        ("post-processors", PluginKind::PostProcessor),
    ] {
        let Some(entries) = doc.value.get(section).and_then(Value::as_array) else {
            continue;
        };
        for (i, entry) in entries.iter().enumerate() {
            let base = vec![Segment::Key(section.to_owned()), Segment::Index(i)];
            for (path, item) in chain_items(base, entry) {
                if let Some(plugin) = plugin_at(doc, kind, path, item) {
                    plugins.push(plugin);
                }
            }
        }
    }
    plugins
}

/// The items of a section entry with their paths: a post-processor entry may be a
/// chain (a list) rather than one item.
fn chain_items(base: Vec<Segment>, entry: &Value) -> Vec<(Vec<Segment>, &Value)> {
    match entry {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(j, item)| {
                let mut path = base.clone();
                path.push(Segment::Index(j));
                (path, item)
            })
            .collect(),
        other => vec![(base, other)],
    }
}

/// The plugin `item` at `path` declares: an object with a `type`, or a bare type
/// name; `None` for anything else.
fn plugin_at(doc: &Document, kind: PluginKind, path: Vec<Segment>, item: &Value) -> Option<Plugin> {
    let (type_name, type_path) = match item {
        Value::String(name) => (name.clone(), path),
        Value::Object(map) => {
            let mut type_path = path;
            type_path.push(Segment::Key("type".into()));
            let name = map.get("type").and_then(Value::as_str).unwrap_or("");
            (name.to_owned(), type_path)
        }
        _ => return None,
    };
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or(&type_name)
        .to_owned();
    Some(Plugin {
        kind,
        position: doc.scan.value_position(&type_path),
        type_name,
        name,
    })
}

impl AnsibleProvisioner {
    /// Reads an `ansible` provisioner's settings, with Packer's defaults.
    fn from_value(p: &Value) -> AnsibleProvisioner {
        let strings = |key: &str| -> Vec<String> {
            p.get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        };
        let string = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_owned);
        AnsibleProvisioner {
            playbook_file: string("playbook_file").unwrap_or_default(),
            extra_arguments: strings("extra_arguments"),
            env_vars: strings("ansible_env_vars"),
            user: string("user"),
            host_alias: string("host_alias").unwrap_or_else(|| "default".into()),
            groups: strings("groups"),
        }
    }
}

/// One variable a var file sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub position: Option<Position>,
}

/// A var file: a flat object of string values.
#[derive(Debug)]
pub struct VarFile {
    pub doc: Document,
    pub settings: BTreeMap<String, Setting>,
}

impl VarFile {
    /// Reads the settings; anything but an object of strings is a finding, as Packer
    /// refuses it ("cannot unmarshal number into Go value of type string").
    pub fn from_document(doc: Document) -> (VarFile, Vec<Finding>) {
        let mut findings = Vec::new();
        let mut settings = BTreeMap::new();
        match doc.value.as_object() {
            Some(map) => {
                for (name, value) in map {
                    let position = doc.scan.key_position(&[], name);
                    match value {
                        Value::String(s) => {
                            settings.insert(
                                name.clone(),
                                Setting {
                                    value: s.clone(),
                                    position,
                                },
                            );
                        }
                        _ => findings.push(Finding::at(
                            &doc.path,
                            position,
                            format!(
                                "`{name}` is not a string; Packer reads var files as strings only"
                            ),
                        )),
                    }
                }
            }
            None => findings.push(Finding::at(
                &doc.path,
                Some(Position { line: 1, column: 1 }),
                "a var file must be a JSON object of variable names to strings",
            )),
        }
        (VarFile { doc, settings }, findings)
    }
}

/// A `{{user `name`}}` or `{{env `NAME`}}` in a JSON file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub function: Function,
    pub name: String,
    pub position: Position,
    /// Where in the document the string holding it is.
    pub path: Vec<Segment>,
}

/// The template functions whose arguments name something the checks can resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    User,
    Env,
}

/// Every reference in `doc`'s string values (and keys), and every template action
/// that does not parse (Packer fails on those).
pub fn references(doc: &Document) -> (Vec<Reference>, Vec<Finding>) {
    let mut references = Vec::new();
    let mut findings = Vec::new();
    for string in &doc.scan.strings {
        match actions(&string.value) {
            Ok(found) => {
                for (offset, function, name) in found {
                    references.push(Reference {
                        function,
                        name,
                        position: string.position_at(offset),
                        path: string.path.clone(),
                    });
                }
            }
            Err((offset, message)) => findings.push(Finding::at(
                &doc.path,
                Some(string.position_at(offset)),
                message,
            )),
        }
    }
    (references, findings)
}

/// A call found in a template action: the byte offset of its action's `{{`, the
/// function and its argument.
pub type Call = (usize, Function, String);

/// The `user` and `env` calls in the Go template actions of `text`: the byte offset
/// of each action's `{{`, the function and its argument. An action that does not
/// parse is an error at its offset.
pub fn actions(text: &str) -> Result<Vec<Call>, (usize, String)> {
    let mut found = Vec::new();
    for action in parse_actions(text)? {
        let tokens = &action.tokens;
        for (i, token) in tokens.iter().enumerate() {
            let function = match token {
                Token::Ident(name) if name == "user" => Function::User,
                Token::Ident(name) if name == "env" => Function::Env,
                _ => continue,
            };
            if i > 0 && tokens[i - 1] == Token::Dot {
                continue; // a field such as `.user`, not a call
            }
            match tokens.get(i + 1) {
                Some(Token::Str(name)) => found.push((action.span.start, function, name.clone())),
                _ => {
                    let word = if function == Function::User {
                        "user"
                    } else {
                        "env"
                    };
                    return Err((
                        action.span.start,
                        format!("`{word}` needs a quoted name, as in {{{{{word} `name`}}}}"),
                    ));
                }
            }
        }
    }
    Ok(found)
}

/// `text` with each `{{user `name`}}` replaced by `lookup(name)`. Any other action
/// (a function, a pipeline) is an error: only Packer can render it.
pub fn render_user(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let actions = parse_actions(text).map_err(|(_, message)| message)?;
    let mut out = String::new();
    let mut last = 0;
    for action in actions {
        let name = match action.tokens.as_slice() {
            [Token::Ident(function), Token::Str(name)] if function == "user" => name,
            _ => {
                return Err(format!(
                    "`{}` is more than a plain variable",
                    &text[action.span.clone()]
                ))
            }
        };
        let value = lookup(name).ok_or_else(|| format!("`{name}` has no value"))?;
        out.push_str(&text[last..action.span.start]);
        out.push_str(&value);
        last = action.span.end;
    }
    out.push_str(&text[last..]);
    Ok(out)
}

/// One `{{ ... }}` of a Go template.
struct Action {
    /// From the `{{` to just past the `}}`.
    span: std::ops::Range<usize>,
    tokens: Vec<Token>,
}

fn parse_actions(text: &str) -> Result<Vec<Action>, (usize, String)> {
    let mut actions = Vec::new();
    let mut rest = 0;
    while let Some(start) = text[rest..].find("{{").map(|i| rest + i) {
        let body_start = start + 2;
        let Some(end) = find_action_end(text, body_start) else {
            return Err((start, "unclosed template action: `{{` without `}}`".into()));
        };
        let body = text[body_start..end]
            .trim_start_matches('-')
            .trim_end_matches('-');
        let tokens = tokenize(body).map_err(|m| (start, m))?;
        actions.push(Action {
            span: start..end + 2,
            tokens,
        });
        rest = end + 2;
    }
    Ok(actions)
}

/// The offset of the `}}` that closes an action whose body starts at `from`,
/// skipping quoted strings (which may contain `}}`).
fn find_action_end(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => i = from_quote(text, i, b'`')?,
            b'"' => i = from_quote(text, i, b'"')?,
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The offset just past the string literal that opens at `start` with `quote`.
fn from_quote(text: &str, start: usize, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = start + 1;
    while i < bytes.len() {
        if quote == b'"' && bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if bytes[i] == quote {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Ident(String),
    Str(String),
    Dot,
    Other,
}

fn tokenize(body: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = body.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|&d| d == '`')
                .ok_or("unterminated raw string in template action")?;
            tokens.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c == '"' {
            let mut value = String::new();
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err("unterminated string in template action".into()),
                    Some('"') => break,
                    Some('\\') => {
                        if let Some(&escaped) = chars.get(j + 1) {
                            value.push(escaped);
                        }
                        j += 2;
                    }
                    Some(&other) => {
                        value.push(other);
                        j += 1;
                    }
                }
            }
            tokens.push(Token::Str(value));
            i = j + 1;
        } else if c.is_alphabetic() || c == '_' {
            let len = chars[i..]
                .iter()
                .take_while(|d| d.is_alphanumeric() || **d == '_')
                .count();
            tokens.push(Token::Ident(chars[i..i + len].iter().collect()));
            i += len;
        } else if c == '.' {
            tokens.push(Token::Dot);
            i += 1;
        } else {
            tokens.push(Token::Other);
            i += 1;
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn calls(text: &str) -> Vec<Call> {
        actions(text).unwrap()
    }

    #[test]
    fn finds_user_and_env_calls() {
        assert_eq!(
            calls("a-{{user `x`}}-{{ user \"y\" }}"),
            vec![
                (2, Function::User, "x".to_owned()),
                (15, Function::User, "y".to_owned())
            ]
        );
        assert_eq!(
            calls("{{env `HOME`}}/{{ user `v` | replace \"}}\" \"\" 1 }}"),
            vec![
                (0, Function::Env, "HOME".to_owned()),
                (15, Function::User, "v".to_owned())
            ]
        );
        assert_eq!(calls("{{timestamp}} {{ .HTTPIP }} {{.user}}"), vec![]);
        assert_eq!(calls("plain text, no actions"), vec![]);
    }

    #[test]
    fn renders_plain_user_variables() {
        let lookup = |name: &str| (name == "v").then(|| "1.2".to_owned());
        assert_eq!(
            render_user("a={{user `v`}} b={{ user `v` }}", lookup).unwrap(),
            "a=1.2 b=1.2"
        );
        assert!(render_user("{{user `w`}}", lookup)
            .unwrap_err()
            .contains("`w` has no value"));
        assert!(render_user("{{timestamp}}", lookup).is_err());
    }

    #[test]
    fn malformed_actions_are_errors() {
        assert_eq!(
            actions("x {{user `a`}").unwrap_err().0,
            2,
            "an unclosed action is reported at its `{{`"
        );
        assert!(actions("{{user a}}").unwrap_err().1.contains("quoted name"));
    }

    fn doc(path: &str, text: &str) -> Document {
        Document {
            path: path.into(),
            value: json_text::parse(text).unwrap(),
            scan: json_text::scan(text),
        }
    }

    #[test]
    fn template_model_reads_variables_plugins_and_ansible() {
        let text = r#"{
  "builders": [{"type": "qemu", "name": "q"}],
  "post-processors": [[{"type": "manifest"}, "compress"]],
  "provisioners": [
    {"type": "ansible", "playbook_file": "ansible/node.yml", "extra_arguments": ["--extra-vars", "{{user `v`}}"], "user": "core"}
  ],
  "variables": {"v": "a=b", "req": null, "n": 3}
}"#;
        let (t, findings) = Template::from_document(doc("packer/qemu/packer.json", text));
        assert!(findings.is_empty());
        assert_eq!(t.variables["req"].default, None);
        assert_eq!(t.variables["n"].default.as_deref(), Some("3"));
        assert_eq!(
            t.variables["req"].position,
            Some(Position {
                line: 7,
                column: 29
            })
        );
        let kinds: Vec<(&str, &str)> = t
            .plugins
            .iter()
            .map(|p| (p.kind.word(), p.type_name.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("builder", "qemu"),
                ("provisioner", "ansible"),
                ("post-processor", "manifest"),
                ("post-processor", "compress")
            ]
        );
        assert_eq!(t.first_builder().unwrap().name, "q");
        assert_eq!(
            t.plugins[0].position,
            Some(Position {
                line: 2,
                column: 25
            })
        );
        assert_eq!(t.ansible[0].playbook_file, "ansible/node.yml");
        assert_eq!(t.ansible[0].host_alias, "default");
        assert_eq!(t.ansible[0].extra_arguments[1], "{{user `v`}}");
    }

    #[test]
    fn var_files_hold_strings_only() {
        let (vars, findings) = VarFile::from_document(doc(
            "packer/config/x.json",
            "{\n  \"a\": \"1\",\n  \"b\": 2\n}\n",
        ));
        assert_eq!(vars.settings["a"].value, "1");
        assert_eq!(
            findings,
            vec![Finding::at(
                "packer/config/x.json",
                Some(Position { line: 3, column: 3 }),
                "`b` is not a string; Packer reads var files as strings only"
            )]
        );
    }

    #[test]
    fn references_carry_their_position() {
        let d = doc(
            "packer/config/cni.json",
            "{\n  \"cni_url\": \"https://x/{{user `cni_version`}}/y\"\n}\n",
        );
        let (refs, findings) = references(&d);
        assert!(findings.is_empty());
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].name, "cni_version");
        assert_eq!(
            refs[0].position,
            Position {
                line: 2,
                column: 25
            }
        );
    }
}
