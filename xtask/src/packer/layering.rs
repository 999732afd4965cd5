//! Layering a build target's var files onto its template the way Packer does:
//! template defaults, then each var file in order (later files win), then what the
//! build supplies. Also the checks Packer 1.6 skips without a word: every
//! `{{user `name`}}` names a declared variable, no var file sets an undeclared one,
//! and every required variable gets a value.

use std::collections::BTreeMap;
use std::path::Path;

use super::targets::BuildTarget;
use super::template::{self, Document, Finding, Function, Template, VarFile};
use crate::json_text::Segment;

/// Where a variable's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The template's own default.
    Default,
    /// This var file (relative to images/capi), the last one that sets it.
    VarFile(String),
    /// The build's generated var file.
    Build,
}

/// A variable after layering.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layered {
    /// The raw value, before `{{user}}` references in it are rendered; `None` for a
    /// required variable nobody set. For a build input: the value it has until the
    /// build supplies its own.
    pub value: Option<String>,
    pub origin: Origin,
}

/// A target's template and var files, read.
#[derive(Debug)]
pub struct Stack {
    pub template: Option<Template>,
    /// The var files that could be read, in order.
    pub var_files: Vec<VarFile>,
    /// Whether every var file could be read: if not, a variable that seems unset may
    /// be set in one that could not.
    pub complete: bool,
}

/// Reads `target`'s template and var files from `capi`. A missing or broken file is
/// a finding, and the rest are still read.
pub fn load_stack(capi: &Path, target: &BuildTarget) -> (Stack, Vec<Finding>) {
    let mut findings = Vec::new();
    let template = match template::load(capi, target.template) {
        Ok(doc) => {
            let (template, found) = Template::from_document(doc);
            findings.extend(found);
            Some(template)
        }
        Err(finding) => {
            findings.push(missing_or(finding, target, "template"));
            None
        }
    };
    let mut var_files = Vec::new();
    let mut complete = true;
    for path in target.var_files {
        match template::load(capi, path) {
            Ok(doc) => {
                let (vars, found) = VarFile::from_document(doc);
                findings.extend(found);
                var_files.push(vars);
            }
            Err(finding) => {
                complete = false;
                findings.push(missing_or(finding, target, "var file"));
            }
        }
    }
    (
        Stack {
            template,
            var_files,
            complete,
        },
        findings,
    )
}

fn missing_or(finding: Finding, target: &BuildTarget, what: &str) -> Finding {
    if finding.message == "file does not exist" {
        Finding::at(
            &finding.file,
            None,
            format!(
                "missing {what}: build target `{}` layers it, but it does not exist",
                target.name
            ),
        )
    } else {
        finding
    }
}

/// Layers `stack` for `target` and returns every variable's value and origin, with
/// what is wrong.
pub fn layer(target: &BuildTarget, stack: &Stack) -> (BTreeMap<String, Layered>, Vec<Finding>) {
    let mut findings = Vec::new();
    let Some(template) = &stack.template else {
        return (BTreeMap::new(), findings);
    };
    let mut values = template_defaults(template);
    apply_var_files(template, &stack.var_files, &mut values, &mut findings);
    apply_build_inputs(template, target, &mut values, &mut findings);
    if stack.complete {
        findings.extend(unset_required(template, target, &values));
    }
    let docs = std::iter::once(&template.doc).chain(stack.var_files.iter().map(|v| &v.doc));
    for (index, doc) in docs.enumerate() {
        let is_template = index == 0;
        findings.extend(reference_findings(template, doc, is_template));
        findings.extend(duplicate_key_findings(doc));
    }
    (values, findings)
}

/// Every declared variable with the template's own default.
fn template_defaults(template: &Template) -> BTreeMap<String, Layered> {
    template
        .variables
        .iter()
        .map(|(name, variable)| {
            let layered = Layered {
                value: variable.default.clone(),
                origin: Origin::Default,
            };
            (name.clone(), layered)
        })
        .collect()
}

/// Layers each var file in order, later files winning; a setting the template does
/// not declare is a finding.
fn apply_var_files(
    template: &Template,
    var_files: &[VarFile],
    values: &mut BTreeMap<String, Layered>,
    findings: &mut Vec<Finding>,
) {
    let template_path = template.doc.path.as_str();
    for vars in var_files {
        for (name, setting) in &vars.settings {
            if template.variables.contains_key(name) {
                values.insert(
                    name.clone(),
                    Layered {
                        value: Some(setting.value.clone()),
                        origin: Origin::VarFile(vars.doc.path.clone()),
                    },
                );
            } else {
                findings.push(Finding::at(
                    &vars.doc.path,
                    setting.position,
                    format!(
                        "sets `{name}`, which {template_path} does not declare (Packer would ignore it silently)"
                    ),
                ));
            }
        }
    }
}

/// Marks the variables the build supplies; one the template does not declare is a
/// finding.
fn apply_build_inputs(
    template: &Template,
    target: &BuildTarget,
    values: &mut BTreeMap<String, Layered>,
    findings: &mut Vec<Finding>,
) {
    for input in target.build_inputs {
        let name = input.variable();
        if template.variables.contains_key(name) {
            // The var files' value stays as the fallback until the build's is known.
            let value = values.get(name).and_then(|v| v.value.clone());
            values.insert(
                name.to_owned(),
                Layered {
                    value,
                    origin: Origin::Build,
                },
            );
        } else {
            findings.push(Finding::at(
                &template.doc.path,
                template.doc.scan.key_position(&[], "variables"),
                format!("the build supplies `{name}`, but the template does not declare it"),
            ));
        }
    }
}

/// The required variables (default null) that nothing set.
fn unset_required(
    template: &Template,
    target: &BuildTarget,
    values: &BTreeMap<String, Layered>,
) -> Vec<Finding> {
    template
        .variables
        .iter()
        .filter(|(name, variable)| {
            variable.default.is_none() && values[name.as_str()].origin == Origin::Default
        })
        .map(|(name, variable)| {
            Finding::at(
                &template.doc.path,
                variable.position,
                format!(
                    "`{name}` is required (its default is null), but no var file of build target `{}` sets it and the build does not supply it",
                    target.name
                ),
            )
        })
        .collect()
}

/// What is wrong with `doc`'s `{{user}}` and `{{env}}` references: an undeclared
/// variable, or `env` outside the template's variable defaults.
fn reference_findings(template: &Template, doc: &Document, is_template: bool) -> Vec<Finding> {
    let template_path = template.doc.path.as_str();
    let (references, mut findings) = template::references(doc);
    for reference in references {
        match reference.function {
            Function::User if !template.variables.contains_key(&reference.name) => findings
                .push(Finding::at(
                    &doc.path,
                    Some(reference.position),
                    format!(
                        "`{{{{user `{}`}}}}`: no variable `{}` is declared in {template_path}",
                        reference.name, reference.name
                    ),
                )),
            Function::Env
                if !(is_template
                    && matches!(reference.path.first(), Some(Segment::Key(k)) if k == "variables")) =>
            {
                findings.push(Finding::at(
                    &doc.path,
                    Some(reference.position),
                    format!(
                        "`{{{{env `{}`}}}}`: Packer allows `env` only in the defaults of a template's variables",
                        reference.name
                    ),
                ))
            }
            _ => {}
        }
    }
    findings
}

/// A key that appears twice in one object: Packer keeps the last without a word.
fn duplicate_key_findings(doc: &Document) -> Vec<Finding> {
    doc.scan
        .duplicate_keys
        .iter()
        .map(|duplicate| {
            Finding::at(
                &doc.path,
                Some(duplicate.position),
                format!(
                    "`{}` appears twice in the same object (first on line {}); only the last one counts",
                    duplicate.key, duplicate.first.line
                ),
            )
        })
        .collect()
}

/// `text` with every `{{user `name`}}` rendered from `values`, recursively, the way
/// Packer renders variables that refer to other variables. `supplied` gives the
/// build inputs' values.
pub fn render(
    text: &str,
    values: &BTreeMap<String, Layered>,
    supplied: &BTreeMap<String, String>,
) -> Result<String, String> {
    render_depth(text, values, supplied, 0)
}

fn render_depth(
    text: &str,
    values: &BTreeMap<String, Layered>,
    supplied: &BTreeMap<String, String>,
    depth: usize,
) -> Result<String, String> {
    if depth > 16 {
        return Err(format!("variables refer to each other in a loop: {text}"));
    }
    template::render_user(text, |name| {
        let raw = supplied
            .get(name)
            .cloned()
            .or_else(|| values.get(name)?.value.clone())?;
        render_depth(&raw, values, supplied, depth + 1).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_text::{self, Position};
    use crate::packer::targets::BuildInput;
    use crate::packer::template::Document;

    const TARGET: BuildTarget = BuildTarget {
        name: "test",
        template: "t.json",
        var_files: &["a.json", "b.json"],
        build_inputs: &[BuildInput::ImagePath],
    };

    fn doc(path: &str, text: &str) -> Document {
        Document {
            path: path.into(),
            value: json_text::parse(text).unwrap(),
            scan: json_text::scan(text),
        }
    }

    fn stack(template: &str, a: &str, b: &str) -> Stack {
        Stack {
            template: Some(Template::from_document(doc("t.json", template)).0),
            var_files: vec![
                VarFile::from_document(doc("a.json", a)).0,
                VarFile::from_document(doc("b.json", b)).0,
            ],
            complete: true,
        }
    }

    const TEMPLATE: &str = r#"{
  "builders": [{"type": "qemu", "iso_url": "{{user `flatcar_image_path`}}", "vm_name": "{{user `name`}}"}],
  "variables": {
    "flatcar_image_path": null,
    "name": "{{user `version`}}-x",
    "version": null
  }
}"#;

    #[test]
    fn later_var_files_win_and_values_render() {
        let s = stack(
            TEMPLATE,
            r#"{"version": "1"}"#,
            r#"{"version": "2-{{user `flatcar_image_path`}}"}"#,
        );
        let (values, findings) = layer(&TARGET, &s);
        assert_eq!(findings, vec![]);
        assert_eq!(values["version"].origin, Origin::VarFile("b.json".into()));
        assert_eq!(values["flatcar_image_path"].origin, Origin::Build);
        let supplied = BTreeMap::from([("flatcar_image_path".to_owned(), "/img".to_owned())]);
        assert_eq!(
            render("{{user `name`}}", &values, &supplied).unwrap(),
            "2-/img-x"
        );
    }

    #[test]
    fn reports_undeclared_undefined_and_unset_variables() {
        let s = stack(
            TEMPLATE
                .replace("{{user `name`}}", "{{user `nmae`}}")
                .as_str(),
            "{\n  \"versoin\": \"1\"\n}",
            "{}",
        );
        let (_, findings) = layer(&TARGET, &s);
        let rendered: Vec<String> = findings
            .iter()
            .map(|f| {
                let Position { line, column } = f.position.unwrap();
                format!("{}:{line}:{column}: {}", f.file, f.message)
            })
            .collect();
        expect_test::expect![[r#"
            [
                "a.json:2:3: sets `versoin`, which t.json does not declare (Packer would ignore it silently)",
                "t.json:6:5: `version` is required (its default is null), but no var file of build target `test` sets it and the build does not supply it",
                "t.json:2:89: `{{user `nmae`}}`: no variable `nmae` is declared in t.json",
            ]
        "#]]
        .assert_debug_eq(&rendered);
    }

    #[test]
    fn env_only_in_variable_defaults() {
        let s = stack(
            r#"{"builders": [{"type": "null", "x": "{{env `HOME`}}"}], "variables": {"h": "{{env `HOME`}}"}}"#,
            "{}",
            "{}",
        );
        let target = BuildTarget {
            build_inputs: &[],
            ..TARGET
        };
        let (_, findings) = layer(&target, &s);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].message.contains("`env` only in the defaults"));
    }

    #[test]
    fn build_inputs_must_be_declared() {
        let s = stack(r#"{"variables": {}}"#, "{}", "{}");
        let (_, findings) = layer(&TARGET, &s);
        assert_eq!(
            findings[0].message,
            "the build supplies `flatcar_image_path`, but the template does not declare it"
        );
    }
}
