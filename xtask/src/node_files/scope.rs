//! The variables a role's template sees, evaluated the way Ansible evaluates them:
//! layers (the roles' defaults in play order, then the build's extra vars, then
//! the bake's layout) where a later layer wins, and every text value a Jinja
//! template that may name other variables, rendered lazily when first used.
//! Jinja is minijinja, set up as Ansible's template module sets up Jinja2.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, UndefinedBehavior, Value};

use super::roles::Raw;

/// What Ansible's template module writes for `{{ ansible_managed }}` when no
/// ansible.cfg sets it (none does here): kept, so both paths write the same bytes.
pub const ANSIBLE_MANAGED: &str = "Ansible managed";

/// A variable's value as written, and where (`roles/setup/defaults/main.yml`).
struct Written {
    raw: Raw,
    from: String,
}

pub struct Scope {
    env: Environment<'static>,
    written: BTreeMap<String, Written>,
    evaluated: BTreeMap<String, Value>,
    /// The variables being evaluated, outermost first: a repeat is a cycle.
    evaluating: Vec<String>,
}

/// Jinja as Ansible's template module configures it: trim_blocks on, the
/// template's trailing newline kept, an undefined variable an error.
fn ansible_jinja() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

impl Scope {
    /// An empty scope; `layer` adds to it.
    pub fn new() -> Scope {
        Scope {
            env: ansible_jinja(),
            written: BTreeMap::new(),
            evaluated: BTreeMap::new(),
            evaluating: Vec::new(),
        }
    }

    /// Sets `name`, over whatever an earlier layer set.
    pub fn set(&mut self, name: &str, raw: Raw, from: &str) {
        self.written.insert(
            name.to_owned(),
            Written {
                raw,
                from: from.to_owned(),
            },
        );
    }

    /// The value of variable `name`, evaluated once.
    pub fn value(&mut self, name: &str) -> anyhow::Result<Value> {
        if let Some(value) = self.evaluated.get(name) {
            return Ok(value.clone());
        }
        if let Some(at) = self.evaluating.iter().position(|n| n == name) {
            let mut cycle = self.evaluating[at..].to_vec();
            cycle.push(name.to_owned());
            bail!(
                "the variables refer to each other in a cycle: {}",
                cycle.join(" → ")
            );
        }
        let Some(written) = self.written.get(name) else {
            bail!(
                "`{name}` is not defined: no role's defaults/main.yml declares it and the build does not set it"
            );
        };
        let (raw, from) = (written.raw.clone(), written.from.clone());
        self.evaluating.push(name.to_owned());
        let value = self.evaluate(&raw, &[]);
        self.evaluating.pop();
        let value = value.with_context(|| format!("`{name}` (set in {from})"))?;
        self.evaluated.insert(name.to_owned(), value.clone());
        Ok(value)
    }

    /// `raw` with every text rendered; `locals` (such as a loop's `item`) are
    /// seen before the variables.
    pub fn evaluate(&mut self, raw: &Raw, locals: &[(&str, Value)]) -> anyhow::Result<Value> {
        Ok(match raw {
            Raw::Null => Value::from(()),
            Raw::Bool(b) => Value::from(*b),
            Raw::Int(i) => Value::from(*i),
            Raw::Float(f) => Value::from(*f),
            Raw::Text(text) => self.text(text, locals)?,
            Raw::List(items) => items
                .iter()
                .map(|item| self.evaluate(item, locals))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into(),
            Raw::Map(pairs) => pairs
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.evaluate(v, locals)?)))
                .collect::<anyhow::Result<BTreeMap<String, Value>>>()?
                .into(),
        })
    }

    /// A text value: a lone `{{ expression }}` keeps its value's type (a list stays
    /// a list, as Ansible gives it back), anything else renders to text.
    fn text(&mut self, text: &str, locals: &[(&str, Value)]) -> anyhow::Result<Value> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(Value::from(text));
        }
        let context = self.context_for(text, locals)?;
        let lone = text
            .trim()
            .strip_prefix("{{")
            .and_then(|t| t.strip_suffix("}}"))
            .filter(|inner| {
                !inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")
            });
        let value = match lone {
            Some(expression) => self
                .env
                .compile_expression(expression)
                .and_then(|e| e.eval(context)),
            None => self.env.render_str(text, context).map(Value::from),
        };
        value.map_err(|e| anyhow::anyhow!("`{text}`: {e:#}"))
    }

    /// Renders the template `source`, named `name` in errors, as Ansible's
    /// template module would.
    pub fn render_template(&mut self, name: &str, source: &str) -> anyhow::Result<String> {
        let ansible_managed = [("ansible_managed", Value::from(ANSIBLE_MANAGED))];
        let context = self.context_for(source, &ansible_managed)?;
        self.env
            .template_from_named_str(name, source)
            .and_then(|t| t.render(context))
            .map_err(|e| anyhow::anyhow!("rendering {name}: {e:#}"))
    }

    /// The locals plus every variable `source` names, evaluated first.
    fn context_for(&mut self, source: &str, locals: &[(&str, Value)]) -> anyhow::Result<Value> {
        let named = self
            .env
            .template_from_str(source)
            .map_err(|e| anyhow::anyhow!("`{source}`: {e:#}"))?
            .undeclared_variables(false);
        let mut context: BTreeMap<String, Value> = BTreeMap::new();
        for name in named {
            if let Some((_, value)) = locals.iter().find(|(local, _)| *local == name) {
                context.insert(name, value.clone());
            } else if self.written.contains_key(&name) {
                let value = self.value(&name)?;
                context.insert(name, value);
            }
            // Anything else is a Jinja global (`range`) or undefined, which the
            // strict renderer reports with its place in the template.
        }
        Ok(Value::from(context))
    }
}

/// The `key=value` words of an Ansible `--extra-vars` argument, as Packer's
/// ansible provisioner passes `ansible_common_vars` and its kin. Quoting, `@file`
/// and JSON forms are refused rather than read differently from Ansible.
pub fn extra_vars(argument: &str, variable: &str) -> anyhow::Result<Vec<(String, String)>> {
    let trimmed = argument.trim_start();
    if trimmed.starts_with('@') || trimmed.starts_with('{') || trimmed.starts_with('[') {
        bail!("{variable}: only key=value words are read here, not a file or JSON: `{argument}`");
    }
    argument
        .split_whitespace()
        .map(|word| {
            if word.contains(['"', '\'', '\\']) {
                bail!("{variable}: `{word}`: quoted values are not read here; set the variable in a var file instead");
            }
            match word.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
                _ => bail!("{variable}: `{word}` is not key=value"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Raw {
        Raw::Text(t.to_owned())
    }

    #[test]
    fn later_layers_win_and_values_render_lazily() {
        let mut scope = Scope::new();
        scope.set("prefix", text("/opt"), "defaults");
        scope.set("bin", text("{{ prefix }}/bin"), "defaults");
        scope.set("prefix", text("/usr"), "layout");
        scope.set("broken", text("{{ nowhere }}"), "defaults");
        assert_eq!(scope.value("bin").unwrap().as_str(), Some("/usr/bin"));
    }

    #[test]
    fn a_lone_expression_keeps_its_type() {
        let mut scope = Scope::new();
        scope.set(
            "units",
            Raw::List(vec![text("a.service"), text("b.service")]),
            "d",
        );
        scope.set("wanted", text("{{ units }}"), "d");
        scope.set(
            "by_arch",
            Raw::Map(vec![("amd64".into(), text("linux64"))]),
            "d",
        );
        scope.set("arch", text("amd64"), "d");
        scope.set("platform", text("{{ by_arch[arch] }}"), "d");
        assert_eq!(scope.value("wanted").unwrap().len(), Some(2));
        assert_eq!(scope.value("platform").unwrap().as_str(), Some("linux64"));
    }

    #[test]
    fn cycles_and_undefined_variables_are_named() {
        let mut scope = Scope::new();
        scope.set("a", text("{{ b }}"), "roles/x/defaults/main.yml");
        scope.set("b", text("x{{ a }}"), "roles/x/defaults/main.yml");
        scope.set("c", text("{{ nowhere }}/bin"), "roles/x/defaults/main.yml");
        let cycle = format!("{:#}", scope.value("a").unwrap_err());
        assert!(cycle.contains("cycle: a → b → a"), "{cycle}");
        let undefined = format!("{:#}", scope.value("c").unwrap_err());
        assert!(
            undefined.contains("`c` (set in roles/x/defaults/main.yml)"),
            "{undefined}"
        );
        assert!(undefined.contains("undefined"), "{undefined}");
    }

    #[test]
    fn templates_render_like_ansibles_template_module() {
        let mut scope = Scope::new();
        scope.set(
            "mods",
            Raw::List(vec![text("overlay"), text("br_netfilter")]),
            "d",
        );
        let source = "# {{ ansible_managed }}\n{% for m in mods %}\n{{ m }}\n{% endfor %}\n";
        assert_eq!(
            scope.render_template("t.j2", source).unwrap(),
            "# Ansible managed\noverlay\nbr_netfilter\n"
        );
        let error = scope.render_template("t.j2", "{{ nope }}\n").unwrap_err();
        assert!(format!("{error:#}").contains("t.j2"), "{error:#}");
    }

    #[test]
    fn extra_vars_are_key_value_words() {
        assert_eq!(
            extra_vars(" a=1  b=x=y ", "v").unwrap(),
            [("a".into(), "1".into()), ("b".into(), "x=y".into())]
        );
        assert!(extra_vars("", "v").unwrap().is_empty());
        for bad in ["a='1 2'", "@vars.json", "{\"a\": 1}", "novalue", "=1"] {
            let error = extra_vars(bad, "ansible_extra_vars")
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("ansible_extra_vars: "), "{bad}: {error}");
        }
    }
}
