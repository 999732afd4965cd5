//! The checks `validate` runs (and `pre-commit`, on the staged files): which
//! checks a scope and a set of targets call for (`plan`), and each check by what
//! it looks at: the files' syntax, a target's Packer side, the playbooks, the
//! Ignition configs, the node rules.

pub mod ansible;
pub mod ignition;
pub mod node_rules;
pub mod packer;
pub mod syntax;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::checks::engine::{Check, Problem};
use crate::checks::source_tree::{Scope, SourceTree, CAPI};
use crate::json_text::Position;
use crate::packer::targets::{BuildInput, BuildTarget, TARGETS};
use crate::packer::template::{self, Finding, Template};
use crate::rules;

/// The validate checks for `targets` that concern the files in `scope`.
pub fn plan(tree: &SourceTree, scope: &Scope, targets: &[&'static BuildTarget]) -> Vec<Check> {
    let root = tree.root.clone();
    let whole = targets.len() == TARGETS.len();
    let mut checks = Vec::new();

    let json_files = json_files(tree, scope, targets, whole);
    if !json_files.is_empty() {
        checks.push(syntax::json_check(
            &root,
            json_files,
            whole && matches!(scope, Scope::All),
        ));
    }
    checks.extend(target_checks(tree, scope, targets));
    checks.extend(playbook_checks(tree, scope, targets));
    for config in scope.filter(tree.ignition_configs()) {
        checks.push(ignition::ignition_check(&root, config));
    }

    // Every YAML file, not only what the syntax check loads: the roles' per-OS task
    // files are included at run time, so ansible-playbook never reads them here.
    let yaml_files = scope.filter(
        tree.yaml_files()
            .into_iter()
            .filter(|f| f.starts_with(CAPI))
            .collect(),
    );
    if !yaml_files.is_empty() {
        checks.push(syntax::yaml_check(&root, yaml_files));
    }
    checks.extend(rules_check(&root, scope, targets));
    checks
}

/// The JSON files to parse: the whole tree's, or only the var files of `targets`
/// and the Ignition configs.
fn json_files(
    tree: &SourceTree,
    scope: &Scope,
    targets: &[&'static BuildTarget],
    whole: bool,
) -> Vec<PathBuf> {
    if whole {
        return scope.filter(tree.capi_json());
    }
    let mut files: Vec<PathBuf> = targets
        .iter()
        .flat_map(|t| t.stack())
        .map(|f| Path::new(CAPI).join(f))
        .filter(|f| tree.root.join(f).exists())
        .chain(tree.ignition_configs())
        .collect();
    files.sort();
    files.dedup();
    scope.filter(files)
}

/// Layering and `packer validate` for each target whose var files are in scope;
/// the targets share one set of placeholder build inputs, made on first use.
fn target_checks(tree: &SourceTree, scope: &Scope, targets: &[&'static BuildTarget]) -> Vec<Check> {
    let root = &tree.root;
    let capi = tree.capi();
    let placeholders: Arc<OnceLock<Result<packer::Placeholders, String>>> = Arc::default();
    let mut checks = Vec::new();
    for &target in targets {
        let stack: Vec<PathBuf> = target.stack().map(|f| Path::new(CAPI).join(f)).collect();
        if !scope.touches(stack.iter().map(PathBuf::as_path)) {
            continue;
        }
        checks.push(packer::layering_check(&capi, target, &stack, root));
        checks.push(packer::packer_check(root, target, placeholders.clone()));
    }
    checks
}

/// A syntax check per playbook, when any Ansible file is in scope.
fn playbook_checks(
    tree: &SourceTree,
    scope: &Scope,
    targets: &[&'static BuildTarget],
) -> Vec<Check> {
    if !scope.touches(tree.ansible_files().iter().map(PathBuf::as_path)) {
        return Vec::new();
    }
    let capi = tree.capi();
    let templates: Vec<(&'static BuildTarget, Template)> = targets
        .iter()
        .filter_map(|&t| {
            let doc = template::load(&capi, t.template).ok()?;
            Some((t, Template::from_document(doc).0))
        })
        .collect();
    tree.playbooks()
        .into_iter()
        .map(|playbook| ansible::syntax_check(&tree.root, &playbook, &templates))
        .collect()
}

/// The node rules check, when a target runs the rules and a rules file or such a
/// target's template is in scope.
fn rules_check(root: &Path, scope: &Scope, targets: &[&'static BuildTarget]) -> Option<Check> {
    let rule_targets: Vec<&'static BuildTarget> = targets
        .iter()
        .copied()
        .filter(|t| t.build_inputs.contains(&BuildInput::NodeRulesDir))
        .collect();
    let rules_inputs: Vec<PathBuf> = rules::FILES
        .iter()
        .map(|f| Path::new(CAPI).join(f.path))
        .chain(
            rule_targets
                .iter()
                .map(|t| Path::new(CAPI).join(t.template)),
        )
        .collect();
    if rule_targets.is_empty() || !scope.touches(rules_inputs.iter().map(PathBuf::as_path)) {
        return None;
    }
    Some(node_rules::rules_check(root, rule_targets, rules_inputs))
}

/// The path of a file of images/capi relative to the root, as reports show it.
pub fn shown(capi_relative: &str) -> String {
    format!("{CAPI}/{capi_relative}")
}

pub fn finding_to_problem(finding: Finding) -> Problem {
    let problem = Problem::new(finding.message).in_file(shown(&finding.file));
    match finding.position {
        Some(Position { line, column }) => problem.at(line, Some(column)),
        None => problem,
    }
}
