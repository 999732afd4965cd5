//! The Ansible play as data the bake renders: the roles of `ansible/node.yml` in
//! play order, each with its defaults (YAML values, many of them Jinja
//! expressions), its Flatcar tasks and its templates' text. Reading only: what a
//! task means for the bake is decided in `mod.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};

use crate::rules::yaml::{self, Node, Value};

/// A YAML value as Ansible reads it (PyYAML's YAML 1.1 types); text may hold Jinja.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    List(Vec<Raw>),
    Map(Vec<(String, Raw)>),
}

/// One task of a role's `tasks/flatcar.yml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: String,
    /// `roles/<role>/tasks/flatcar.yml:<line>:<column>`, for errors.
    pub at: String,
    /// The module, as written (`ansible.builtin.template`).
    pub module: String,
    pub args: BTreeMap<String, Raw>,
    /// `loop:`, run once per item with `item` set.
    pub loop_over: Option<Raw>,
    /// Whether the task has a `when:` condition.
    pub conditional: bool,
}

/// One role of the play.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub name: String,
    /// `defaults/main.yml`, in the order written.
    pub defaults: Vec<(String, Raw)>,
    pub tasks: Vec<Task>,
    /// `templates/<name>` → its text.
    pub templates: BTreeMap<String, String>,
}

/// The play of `ansible/node.yml` under `capi`: its roles, in order.
pub fn read(capi: &Path) -> anyhow::Result<Vec<Role>> {
    let ansible = capi.join("ansible");
    let play = read_yaml(&ansible, "node.yml")?;
    let names = play_roles(&play).context("reading the roles of ansible/node.yml")?;
    names.iter().map(|name| read_role(&ansible, name)).collect()
}

fn read_yaml(ansible: &Path, relative: &str) -> anyhow::Result<Node> {
    let path = ansible.join(relative);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    match yaml::parse(&text) {
        Ok(Some(node)) => Ok(node),
        Ok(None) => bail!("ansible/{relative} is empty"),
        Err(e) => bail!(
            "ansible/{relative}:{}:{}: {}",
            e.at.line,
            e.at.column,
            e.message
        ),
    }
}

/// The `roles:` of the playbook's first play (plain names or `role:` mappings).
fn play_roles(play: &Node) -> anyhow::Result<Vec<String>> {
    let Value::Sequence(plays) = &play.value else {
        bail!("a playbook is a list of plays");
    };
    let Some(roles) = plays.first().and_then(|p| get(p, "roles")) else {
        bail!("its first play has no roles");
    };
    let Value::Sequence(roles) = &roles.value else {
        bail!("`roles:` is not a list");
    };
    roles
        .iter()
        .map(|r| {
            r.scalar()
                .or_else(|| get(r, "role").and_then(Node::scalar))
                .map(str::to_owned)
                .with_context(|| format!("line {}: a role without a name", r.at.line))
        })
        .collect()
}

fn read_role(ansible: &Path, name: &str) -> anyhow::Result<Role> {
    let defaults = match read_yaml(ansible, &format!("roles/{name}/defaults/main.yml"))? {
        Node {
            value: Value::Mapping(pairs),
            ..
        } => pairs
            .iter()
            .map(|(k, v)| Ok((scalar_key(k)?, raw(v)?)))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("ansible/roles/{name}/defaults/main.yml"))?,
        _ => bail!("ansible/roles/{name}/defaults/main.yml is not a mapping"),
    };
    let tasks_file = format!("roles/{name}/tasks/flatcar.yml");
    let tasks = match read_yaml(ansible, &tasks_file)?.value {
        Value::Sequence(items) => items
            .iter()
            .map(|t| task(t, &tasks_file))
            .collect::<anyhow::Result<_>>()?,
        _ => bail!("ansible/{tasks_file} is not a list of tasks"),
    };
    let mut templates = BTreeMap::new();
    let dir = ansible.join(format!("roles/{name}/templates"));
    if dir.is_dir() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let path = entry?.path();
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let file = path.file_name().expect("a directory entry has a name");
            templates.insert(file.to_string_lossy().into_owned(), text);
        }
    }
    Ok(Role {
        name: name.to_owned(),
        defaults,
        tasks,
        templates,
    })
}

/// The keys a task may carry besides its module's.
const TASK_KEYWORDS: &[&str] = &[
    "name",
    "loop",
    "loop_control",
    "when",
    "notify",
    "register",
    "changed_when",
    "failed_when",
];

fn task(node: &Node, file: &str) -> anyhow::Result<Task> {
    let at = format!("ansible/{file}:{}:{}", node.at.line, node.at.column);
    let Value::Mapping(pairs) = &node.value else {
        bail!("{at}: a task is a mapping");
    };
    let mut module = None;
    for (key, value) in pairs {
        let key = scalar_key(key).with_context(|| at.clone())?;
        if !TASK_KEYWORDS.contains(&key.as_str()) {
            module = Some((key, value));
        }
    }
    let Some((module, args)) = module else {
        bail!("{at}: a task without a module");
    };
    let args = match raw(args).with_context(|| at.clone())? {
        Raw::Map(pairs) => pairs.into_iter().collect(),
        _ => BTreeMap::new(),
    };
    Ok(Task {
        name: get(node, "name")
            .and_then(Node::scalar)
            .unwrap_or_default()
            .to_owned(),
        module,
        args,
        loop_over: get(node, "loop")
            .map(raw)
            .transpose()
            .with_context(|| at.clone())?,
        conditional: get(node, "when").is_some(),
        at,
    })
}

fn get<'a>(node: &'a Node, key: &str) -> Option<&'a Node> {
    match &node.value {
        Value::Mapping(pairs) => pairs
            .iter()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, v)| v),
        _ => None,
    }
}

fn scalar_key(node: &Node) -> anyhow::Result<String> {
    node.scalar().map(str::to_owned).with_context(|| {
        format!(
            "line {} column {}: a key that is not a scalar",
            node.at.line, node.at.column
        )
    })
}

/// A YAML node typed the way PyYAML (YAML 1.1) types it for Ansible.
fn raw(node: &Node) -> anyhow::Result<Raw> {
    Ok(match &node.value {
        Value::Scalar { text, quoted: true } => Raw::Text(text.clone()),
        Value::Scalar {
            text,
            quoted: false,
        } => plain_scalar(text),
        Value::Sequence(items) => Raw::List(items.iter().map(raw).collect::<anyhow::Result<_>>()?),
        Value::Mapping(pairs) => Raw::Map(
            pairs
                .iter()
                .map(|(k, v)| Ok((scalar_key(k)?, raw(v)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
        Value::Alias => bail!(
            "line {} column {}: YAML aliases are not read here",
            node.at.line,
            node.at.column
        ),
    })
}

fn plain_scalar(text: &str) -> Raw {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => Raw::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Raw::Bool(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            Raw::Bool(false)
        }
        _ => {
            if let Ok(i) = text.parse() {
                Raw::Int(i)
            } else if let Some(f) = text
                .parse::<f64>()
                .ok()
                .filter(|_| text.bytes().any(|b| b.is_ascii_digit()) && !text.contains("inf"))
            {
                Raw::Float(f)
            } else {
                Raw::Text(text.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_scalars_are_typed_like_pyyaml() {
        assert_eq!(plain_scalar("yes"), Raw::Bool(true));
        assert_eq!(plain_scalar("10"), Raw::Int(10));
        assert_eq!(plain_scalar("3.10"), Raw::Float(3.1));
        assert_eq!(plain_scalar("~"), Raw::Null);
        assert_eq!(plain_scalar("v1.36.2"), Raw::Text("v1.36.2".into()));
        assert_eq!(plain_scalar("/opt"), Raw::Text("/opt".into()));
    }

    #[test]
    fn the_repository_play_is_read_in_order() {
        let roles = read(&crate::workspace::capi_dir()).unwrap();
        let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["setup", "containerd", "kubernetes", "node", "providers"]
        );
        let node = &roles[3];
        assert!(node
            .defaults
            .iter()
            .any(|(k, v)| k == "node_sysctl_settings"
                && matches!(v, Raw::Map(m) if m.contains(&("kernel.panic".into(), Raw::Int(10))))));
        let enable = node
            .tasks
            .iter()
            .find(|t| t.module == "ansible.builtin.systemd")
            .unwrap();
        assert_eq!(
            enable.loop_over,
            Some(Raw::Text("{{ node_enabled_units }}".into()))
        );
        assert!(enable
            .at
            .starts_with("ansible/roles/node/tasks/flatcar.yml:"));
        assert!(node.templates.contains_key("sysctl.conf.j2"));
    }
}
