//! A rules file as checks: the subset of goss's vocabulary this project supports
//! (resources `service`, `kernel-param`, `command`, `file`, `mount`, each with the
//! attributes in `ATTRIBUTES`), values with `{{ .Vars.name }}` references to the
//! build's variables. Anything else is a problem with its line and column, never
//! ignored: a rule that silently checks nothing is worse than none. goss's `meta`
//! (free data goss ignores) carries one thing of ours: `only` and its `because`,
//! for a rule that holds for one way of making images and cannot for the other.

use std::collections::{BTreeMap, BTreeSet};

use super::yaml::{self, Node, Value};
use crate::json_text::Position;

/// A goss resource type this project supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Service,
    KernelParam,
    Command,
    File,
    Mount,
}

/// What an attribute's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Bool,
    Int,
    Text,
    /// A list of patterns: `text` (contains), `!text` (does not), `/re/`, `!/re/`.
    Patterns,
}

/// An attribute's name and the shape of its value.
type Attribute = (&'static str, Shape);

/// Each resource's attributes, in goss's spelling. `exec` and `timeout` are command
/// settings, not checks.
const ATTRIBUTES: &[(Resource, &str, &[Attribute])] = &[
    (
        Resource::Service,
        "service",
        &[("enabled", Shape::Bool), ("running", Shape::Bool)],
    ),
    (
        Resource::KernelParam,
        "kernel-param",
        &[("value", Shape::Text)],
    ),
    (
        Resource::Command,
        "command",
        &[
            ("exec", Shape::Text),
            ("timeout", Shape::Int),
            ("exit-status", Shape::Int),
            ("stdout", Shape::Patterns),
            ("stderr", Shape::Patterns),
        ],
    ),
    (
        Resource::File,
        "file",
        &[
            ("exists", Shape::Bool),
            ("filetype", Shape::Text),
            ("mode", Shape::Text),
            ("owner", Shape::Text),
            ("group", Shape::Text),
            ("contains", Shape::Patterns),
        ],
    ),
    (
        Resource::Mount,
        "mount",
        &[
            ("exists", Shape::Bool),
            ("filesystem", Shape::Text),
            ("opts", Shape::Patterns),
        ],
    ),
];

impl Resource {
    pub fn key(self) -> &'static str {
        ATTRIBUTES.iter().find(|(r, ..)| *r == self).unwrap().1
    }
}

/// Text that may hold `{{ .Vars.name }}` references, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub raw: String,
    pub at: Position,
}

/// One expectation of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    Bool(bool),
    Int(i64),
    Text(Text),
    /// One pattern of a `stdout`, `stderr`, `contains` or `opts` list.
    Pattern(Text),
}

/// The way an image was made: `build` (build-flatcar: Packer and Ansible in a VM)
/// or `bake` (the platform's own image plus the Kubernetes sysext, no VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MadeBy {
    Build,
    Bake,
}

impl MadeBy {
    /// As the rules files spell it.
    pub fn name(self) -> &'static str {
        match self {
            MadeBy::Build => "build",
            MadeBy::Bake => "bake",
        }
    }
}

/// A rule that holds for images made one way only, and the rules file's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Only {
    pub made_by: MadeBy,
    pub because: String,
}

/// One check: a resource's subject and one attribute's expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub resource: Resource,
    pub subject: Text,
    pub attribute: &'static str,
    pub expected: Expected,
    /// The command to run (commands only): `exec`, else the subject.
    pub exec: Option<Text>,
    /// Seconds a command may run (goss's `timeout` is in milliseconds; default 10 s).
    pub timeout_secs: u64,
    /// `meta: {only: build|bake, because: ...}`: the rule holds for that way only.
    pub only: Option<Only>,
}

impl Rule {
    /// Whether the rule applies to an image made `made_by`.
    pub fn applies_to(&self, made_by: MadeBy) -> bool {
        self.only.as_ref().is_none_or(|o| o.made_by == made_by)
    }
}

/// Something wrong with a rules file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub at: Position,
}

fn problem(at: Position, message: impl Into<String>) -> Problem {
    Problem {
        message: message.into(),
        at,
    }
}

/// The rules of one file and every problem found in it (the rules that could be
/// read, so that their variables are checked too).
pub fn parse(text: &str) -> (Vec<Rule>, Vec<Problem>) {
    let root = match yaml::parse(text) {
        Ok(Some(root)) => root,
        Ok(None) => return (Vec::new(), Vec::new()),
        Err(e) => {
            let syntax = problem(e.at, format!("YAML syntax error: {}", e.message));
            return (Vec::new(), vec![syntax]);
        }
    };
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for (key, body) in mapping(&root, &mut problems) {
        let name = key.scalar().unwrap_or_default();
        let Some((resource, _, attributes)) = ATTRIBUTES.iter().find(|(_, k, _)| *k == name) else {
            problems.push(problem(
                key.at,
                format!(
                    "resource type `{name}` is not supported; supported: {}",
                    supported_resources()
                ),
            ));
            continue;
        };
        for (subject, attrs) in mapping(body, &mut problems) {
            let Some(subject_text) = subject.scalar() else {
                problems.push(problem(subject.at, "a resource is named by a scalar"));
                continue;
            };
            let subject = Text {
                raw: subject_text.to_owned(),
                at: subject.at,
            };
            parse_resource(
                *resource,
                attributes,
                subject,
                attrs,
                &mut rules,
                &mut problems,
            );
        }
    }
    (rules, problems)
}

fn supported_resources() -> String {
    ATTRIBUTES
        .iter()
        .map(|(_, k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A mapping's pairs; anything else (or a repeated key) is a problem.
fn mapping<'a>(node: &'a Node, problems: &mut Vec<Problem>) -> Vec<(&'a Node, &'a Node)> {
    let Value::Mapping(pairs) = &node.value else {
        problems.push(problem(
            node.at,
            format!("expected a mapping, found {}", node.kind()),
        ));
        return Vec::new();
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _) in pairs {
        if let Some(text) = key.scalar() {
            if let Some(line) = seen.insert(text, key.at.line) {
                problems.push(problem(
                    key.at,
                    format!("`{text}` appears twice (first on line {line}); goss keeps only one"),
                ));
            }
        }
    }
    pairs.iter().map(|(k, v)| (k, v)).collect()
}

fn parse_resource(
    resource: Resource,
    attributes: &[Attribute],
    subject: Text,
    body: &Node,
    rules: &mut Vec<Rule>,
    problems: &mut Vec<Problem>,
) {
    let mut exec = None;
    let mut timeout_secs = 10;
    let mut only = None;
    let mut checks = Vec::new();
    for (key, value) in mapping(body, problems) {
        let name = key.scalar().unwrap_or_default();
        if name == "meta" {
            only = parse_meta(value, problems);
            continue;
        }
        let Some(&(attribute, shape)) = attributes.iter().find(|(a, _)| *a == name) else {
            let known: Vec<&str> = attributes.iter().map(|(a, _)| *a).collect();
            problems.push(problem(
                key.at,
                format!(
                    "`{name}` is not a supported attribute of `{}`; supported: {}",
                    resource.key(),
                    known.join(", ")
                ),
            ));
            continue;
        };
        match (attribute, expected(shape, value)) {
            (_, Err(p)) => problems.push(p),
            ("exec", Ok(mut found)) => exec = found.pop().map(|e| e.text()),
            ("timeout", Ok(found)) => {
                if let Some(Expected::Int(ms)) = found.first() {
                    timeout_secs = (*ms as u64).div_ceil(1000).max(1);
                }
            }
            (_, Ok(found)) => checks.extend(found.into_iter().map(|e| (attribute, e))),
        }
    }
    if checks.is_empty() {
        problems.push(problem(
            subject.at,
            format!("`{}` checks nothing: give it an attribute", subject.raw),
        ));
    }
    if resource == Resource::Command && exec.is_none() {
        exec = Some(subject.clone());
    }
    for (attribute, expected) in checks {
        rules.push(Rule {
            resource,
            subject: subject.clone(),
            attribute,
            expected,
            exec: exec.clone(),
            timeout_secs,
            only: only.clone(),
        });
    }
}

/// goss's `meta` as this project reads it: `only` (`build` or `bake`) with its
/// required `because`, nothing else.
fn parse_meta(meta: &Node, problems: &mut Vec<Problem>) -> Option<Only> {
    let mut only = None;
    let mut because = None;
    // An `only` with a wrong value is reported once, not again as missing.
    let mut only_written = false;
    for (key, value) in mapping(meta, problems) {
        let text = match &value.value {
            Value::Scalar { text, .. } => text.trim(),
            _ => {
                problems.push(problem(
                    value.at,
                    format!("expected a single value, found {}", value.kind()),
                ));
                continue;
            }
        };
        let name = key.scalar().unwrap_or_default();
        only_written |= name == "only";
        match name {
            "only" => match text {
                "build" => only = Some((MadeBy::Build, key.at)),
                "bake" => only = Some((MadeBy::Bake, key.at)),
                other => problems.push(problem(
                    value.at,
                    format!("`only: {other}`: expected `build` (build-flatcar) or `bake`"),
                )),
            },
            "because" if text.is_empty() => problems.push(problem(
                value.at,
                "`because` is empty: say why the rule cannot hold",
            )),
            "because" => because = Some((text.to_owned(), key.at)),
            other => problems.push(problem(
                key.at,
                format!("`meta: {other}` is not supported; supported: only, because"),
            )),
        }
    }
    match (only, because) {
        (Some((made_by, _)), Some((because, _))) => Some(Only { made_by, because }),
        (Some((_, at)), None) => {
            problems.push(problem(
                at,
                "`only` needs a `because`: say why the rule cannot hold for the other way",
            ));
            None
        }
        (None, Some((_, at))) if !only_written => {
            problems.push(problem(at, "`because` without `only`"));
            None
        }
        (None, _) => None,
    }
}

impl Expected {
    fn text(self) -> Text {
        match self {
            Expected::Text(t) | Expected::Pattern(t) => t,
            other => unreachable!("{other:?} is not text"),
        }
    }
}

/// The expectations `value` gives for an attribute of `shape`.
fn expected(shape: Shape, value: &Node) -> Result<Vec<Expected>, Problem> {
    let scalar = |node: &Node| match &node.value {
        Value::Scalar { text, quoted } => Ok((text.clone(), *quoted)),
        _ => Err(problem(
            node.at,
            format!("expected a single value, found {}", node.kind()),
        )),
    };
    match shape {
        Shape::Bool => match scalar(value)? {
            (t, false) if t == "true" || t == "false" => Ok(vec![Expected::Bool(t == "true")]),
            (t, _) => Err(problem(
                value.at,
                format!("expected true or false, found `{t}`"),
            )),
        },
        Shape::Int => match scalar(value)? {
            (t, false) if t.parse::<i64>().is_ok() => Ok(vec![Expected::Int(t.parse().unwrap())]),
            (t, _) => Err(problem(value.at, format!("expected a number, found `{t}`"))),
        },
        Shape::Text => {
            let (raw, _) = scalar(value)?;
            Ok(vec![Expected::Text(Text { raw, at: value.at })])
        }
        Shape::Patterns => {
            let Value::Sequence(items) = &value.value else {
                return Err(problem(
                    value.at,
                    format!("expected a list of patterns, found {}", value.kind()),
                ));
            };
            items
                .iter()
                .map(|item| {
                    let (raw, _) = scalar(item)?;
                    Ok(Expected::Pattern(Text { raw, at: item.at }))
                })
                .collect()
        }
    }
}

impl Text {
    /// The variables this text names, or where its template is not `{{ .Vars.name }}`.
    pub fn references(&self) -> Result<Vec<String>, Problem> {
        let mut names = Vec::new();
        let mut rest = self.raw.as_str();
        while let Some(start) = rest.find("{{") {
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(problem(self.at, "`{{` without a closing `}}`"));
            };
            let inner = after[..end].trim();
            let name = inner.strip_prefix(".Vars.").filter(|n| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            match name {
                Some(name) => names.push(name.to_owned()),
                None => {
                    return Err(problem(
                        self.at,
                        format!(
                        "`{{{{ {inner} }}}}`: only `{{{{ .Vars.name }}}}` is supported in rules"
                    ),
                    ))
                }
            }
            rest = &after[end + 2..];
        }
        Ok(names)
    }

    /// The text with each reference replaced by its variable's value.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<String, Problem> {
        let mut out = self.raw.clone();
        for name in self.references()? {
            let value = vars.get(&name).ok_or_else(|| {
                problem(
                    self.at,
                    format!("`{name}` is not a variable the build supplies"),
                )
            })?;
            let mut replaced = String::new();
            let mut rest = out.as_str();
            while let Some(start) = rest.find("{{") {
                let end = rest[start..].find("}}").expect("references() checked it") + start;
                let inner = rest[start + 2..end].trim();
                replaced.push_str(&rest[..start]);
                if inner == format!(".Vars.{name}") {
                    replaced.push_str(value);
                } else {
                    replaced.push_str(&rest[start..end + 2]);
                }
                rest = &rest[end + 2..];
            }
            replaced.push_str(rest);
            out = replaced;
        }
        Ok(out)
    }
}

impl Rule {
    /// Every text of the rule: subject, command and expectation.
    pub fn texts(&self) -> impl Iterator<Item = &Text> {
        let expected = match &self.expected {
            Expected::Text(t) | Expected::Pattern(t) => Some(t),
            _ => None,
        };
        std::iter::once(&self.subject)
            .chain(self.exec.as_ref())
            .chain(expected)
    }
}

/// Every template that is not `{{ .Vars.name }}` and every variable that is not in
/// `known`, once per place.
pub fn check_variables(rules: &[Rule], known: &BTreeSet<String>) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    for text in rules.iter().flat_map(Rule::texts) {
        let found = match text.references() {
            Ok(names) => names
                .into_iter()
                .filter(|n| !known.contains(n))
                .map(|n| {
                    problem(
                        text.at,
                        format!(
                            "`{{{{ .Vars.{n} }}}}`: `{n}` is not a variable the build supplies"
                        ),
                    )
                })
                .collect(),
            Err(p) => vec![p],
        };
        for p in found {
            if !problems.contains(&p) {
                problems.push(p);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn goss_rules_become_one_check_per_attribute() {
        let text = "service:\n  containerd:\n    enabled: true\n    running: true\n\
                    kernel-param:\n  net.ipv4.ip_forward:\n    value: \"1\"\n\
                    command:\n  kubeadm reports the version:\n    exec: /opt/bin/kubeadm version -o short\n    exit-status: 0\n    stdout: [\"{{ .Vars.kubernetes_semver }}\", \"!alpha\"]\n    timeout: 2500\n";
        let (rules, problems) = parse(text);
        assert_eq!(problems, []);
        assert_eq!(rules.len(), 6);
        assert_eq!(rules[0].resource, Resource::Service);
        assert_eq!(rules[1].attribute, "running");
        assert_eq!(
            rules[2].expected,
            Expected::Text(Text {
                raw: "1".into(),
                at: Position {
                    line: 7,
                    column: 12
                }
            })
        );
        let command = &rules[3];
        assert_eq!(
            command.exec.as_ref().unwrap().raw,
            "/opt/bin/kubeadm version -o short"
        );
        assert_eq!(command.timeout_secs, 3);
        assert_eq!(rules[4].attribute, "stdout");
        assert_eq!(
            rules[5].expected,
            Expected::Pattern(Text {
                raw: "!alpha".into(),
                at: Position {
                    line: 12,
                    column: 47
                }
            })
        );
    }

    #[test]
    fn unsupported_keys_are_located() {
        let text = "package:\n  kubelet:\n    installed: true\nfile:\n  /etc/kubeadm.yml:\n    exists: true\n    sha256: abc\n    mode: \"0644\"\n";
        let (rules, problems) = parse(text);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(rules.len(), 2, "the readable rules are kept");
        assert_eq!(problems[0].at, Position { line: 1, column: 1 });
        assert!(problems[0].message.contains("`package` is not supported"));
        assert_eq!(problems[1].at, Position { line: 7, column: 5 });
        assert!(problems[1]
            .message
            .contains("`sha256` is not a supported attribute of `file`"));
    }

    #[test]
    fn wrong_shapes_and_empty_rules_are_problems() {
        let text = "service:\n  kubelet:\n    enabled: yes\n  docker: {}\n";
        let (_, problems) = parse(text);
        assert_eq!(
            problems[0].at,
            Position {
                line: 3,
                column: 14
            }
        );
        assert!(problems[0].message.contains("expected true or false"));
        assert!(problems[1].message.contains("checks nothing"));
    }

    #[test]
    fn meta_only_limits_a_rule_to_one_way_with_a_reason() {
        let text = "command:\n  a:\n    exit-status: 0\n    meta:\n      only: build\n      because: a bake adds no containerd release\n\
                    \x20 b:\n    exit-status: 0\n    meta: {only: vm, because: x}\n\
                    \x20 c:\n    exit-status: 0\n    meta: {only: bake}\n\
                    \x20 d:\n    exit-status: 0\n    meta: {because: x, owner: me}\n\
                    \x20 e:\n    exit-status: 0\n";
        let (rules, problems) = parse(text);
        let only = rules[0].only.as_ref().unwrap();
        assert_eq!(only.made_by, MadeBy::Build);
        assert_eq!(only.because, "a bake adds no containerd release");
        assert!(rules[0].applies_to(MadeBy::Build) && !rules[0].applies_to(MadeBy::Bake));
        assert!(rules[4].only.is_none() && rules[4].applies_to(MadeBy::Bake));
        let messages: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.at.line, p.message.as_str()))
            .collect();
        assert_eq!(
            messages,
            [
                (9, "`only: vm`: expected `build` (build-flatcar) or `bake`"),
                (
                    12,
                    "`only` needs a `because`: say why the rule cannot hold for the other way"
                ),
                (
                    15,
                    "`meta: owner` is not supported; supported: only, because"
                ),
                (15, "`because` without `only`"),
            ]
        );
    }

    #[test]
    fn variables_are_rendered_and_checked() {
        let text = Text {
            raw: "v{{ .Vars.a }}-{{.Vars.b}}-{{ .Vars.a }}".into(),
            at: Position { line: 1, column: 1 },
        };
        assert_eq!(text.references().unwrap(), ["a", "b", "a"]);
        assert_eq!(
            text.render(&vars(&[("a", "1"), ("b", "2")])).unwrap(),
            "v1-2-1"
        );
        assert!(text.render(&vars(&[("a", "1")])).is_err());
        let bad = Text {
            raw: "{{ env \"HOME\" }}".into(),
            at: Position { line: 2, column: 3 },
        };
        assert!(bad
            .references()
            .unwrap_err()
            .message
            .contains("only `{{ .Vars.name }}`"));
    }

    #[test]
    fn unknown_variables_are_named_where_they_are_used() {
        let (rules, _) = parse("file:\n  \"{{ .Vars.nope }}\":\n    exists: true\n");
        let known = BTreeSet::from(["kubernetes_semver".to_owned()]);
        let problems = check_variables(&rules, &known);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at, Position { line: 2, column: 3 });
        assert!(problems[0]
            .message
            .contains("`nope` is not a variable the build supplies"));
    }
}
