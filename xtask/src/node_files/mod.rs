//! The files that make a Flatcar machine a Kubernetes node, for `bake`: rendered
//! from the Ansible roles themselves (their templates, their defaults, the extra
//! vars Packer hands Ansible, the bake's layout on top), evaluated as Ansible
//! evaluates them. One source: a template, a default or a var file changed for
//! build-flatcar changes the baked node too. `roles` reads the play, `scope`
//! evaluates variables and templates; this module decides what each task means
//! for a bake. It writes nothing.

pub mod roles;
mod scope;

#[cfg(test)]
mod parity;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use minijinja::value::{Value, ValueKind};

use roles::{Raw, Role, Task};
use scope::Scope;

/// Where a file of the node goes in a baked image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Inside the Kubernetes extension, whose `usr/` systemd-sysext merges into `/usr`.
    Sysext,
    /// Into the image's ROOT partition (`/etc`, `/opt`), as a plain file.
    Root,
}

/// One file the node needs, rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    pub target: Target,
    /// Absolute path on the running node (`/etc/crictl.yaml`, `/usr/lib/systemd/...`);
    /// inside the extension it lives at the same path without the leading `/`.
    pub path: String,
    /// Unix permission bits (`0o644`); owner and group are root.
    pub mode: u32,
    pub contents: String,
    /// The template it came from, relative to images/capi.
    pub template: String,
}

/// A unit enabled the way `systemctl enable` does it: a symlink on ROOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitLink {
    /// `/etc/systemd/system/multi-user.target.wants/kubelet.service`.
    pub path: String,
    /// The unit file it names: `/usr/lib/systemd/system/kubelet.service`.
    pub points_to: String,
}

/// Everything the roles configure for Kubernetes, as a bake writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    /// In task order.
    pub files: Vec<NodeFile>,
    pub enabled_units: Vec<UnitLink>,
    /// Where kubeadm, kubelet, kubectl and crictl go (`/usr/bin`, in the extension).
    pub kubernetes_bin_dir: String,
    /// Where the CNI plugins go (`/opt/cni/bin`, on ROOT: CNI installers write there).
    pub cni_bin_dir: String,
}

/// How a baked node differs from build-flatcar's, as role variables set over
/// everything else (name, value, why). Everything not named here is the same on
/// both paths. Deliberately not here: `systemd_prefix` (containerd's drop-in
/// changes Flatcar's own unit and stays in /etc, as on the Ansible path);
/// `node_modules_load_file` and `node_sysctl_file` (systemd-modules-load and
/// systemd-sysctl are not ordered after systemd-sysext.service, so a file in the
/// extension could be read before the merge: they stay in /etc); `cni_bin_dir`
/// and `sysusrlocal_prefix` (CNI installers and FlexVolume drivers write there,
/// and the merged /usr is read-only).
pub const BAKE_LAYOUT: &[(&str, &str, &str)] = &[
    (
        "sysusr_prefix",
        "/usr",
        "binaries go into the extension, which systemd-sysext merges into /usr",
    ),
    (
        "setup_path",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "the Ansible path's PATH without /opt/bin: the extension's binaries are in /usr/bin",
    ),
    (
        "kubernetes_systemd_unit_dir",
        "/usr/lib/systemd/system",
        "the kubelet unit and its drop-in come with the extension; Flatcar reloads units after the merge",
    ),
    (
        "containerd_daemon",
        "{{ containerd_flatcar_bin_dir }}/containerd",
        "the containerd role's tasks set it from what Flatcar ships; a bake adds no containerd release, so it is Flatcar's own",
    ),
];

/// Roles of the play whose tasks a bake does not render, and why.
pub const NOT_BAKED: &[(&str, &str)] = &[
    (
        "setup",
        "Python for Ansible and PATH drop-ins for /opt/bin: a bake runs no Ansible and its binaries are in /usr/bin",
    ),
    (
        "providers",
        "what a provider's VM needs added: a bake starts from the platform's own image, which carries it",
    ),
];

/// The Packer variables the playbook's provisioner passes, in order, each as one
/// `--extra-vars` argument (packer/qemu/packer.json; a test keeps them equal).
pub const ANSIBLE_ARGUMENTS: &[&str] = &[
    "ansible_common_vars",
    "ansible_os_vars",
    "ansible_extra_vars",
];

/// Where systemd finds the units of Flatcar and of merged extensions.
const VENDOR_UNIT_DIR: &str = "/usr/lib/systemd/system";

/// The play of images/capi/ansible/node.yml, read.
pub fn read(capi: &Path) -> anyhow::Result<Vec<Role>> {
    roles::read(capi)
}

/// The node's files for a bake: `build_vars` are the build's Packer variables,
/// rendered (as the node rules get them); the three `ANSIBLE_ARGUMENTS` among
/// them carry what Ansible receives.
pub fn render(roles: &[Role], build_vars: &BTreeMap<String, String>) -> anyhow::Result<NodeFiles> {
    let mut scope = scope_for(roles, build_vars)?;
    let mut files = Vec::new();
    let mut units = Vec::new();
    for role in roles.iter().filter(|r| is_baked(&r.name)) {
        for task in &role.tasks {
            let module = task.module.trim_start_matches("ansible.builtin.");
            let enables = matches!(module, "systemd" | "systemd_service")
                && task.args.contains_key("enabled");
            if module != "template" && !enables {
                continue;
            }
            if task.conditional {
                bail!(
                    "{}: task `{}` has a `when:` condition, which a bake cannot decide",
                    task.at,
                    task.name
                );
            }
            for item in loop_items(&mut scope, task)? {
                let item = item.map(|i| [("item", i)]);
                let locals = item.as_ref().map(|i| &i[..]).unwrap_or_default();
                if module == "template" {
                    files.push(template_file(&mut scope, role, task, locals)?);
                } else if ansible_bool(&arg(&mut scope, task, "enabled", locals)?) {
                    units.push(string_arg(&mut scope, task, "name", locals)?);
                }
            }
        }
    }
    let systemd_prefix = text(&mut scope, "systemd_prefix")?;
    Ok(NodeFiles {
        enabled_units: unit_links(&units, &files, &systemd_prefix),
        files,
        kubernetes_bin_dir: text(&mut scope, "kubernetes_bin_dir")?,
        cni_bin_dir: text(&mut scope, "cni_bin_dir")?,
    })
}

/// The build's variables as the node rules of a baked image get them: the
/// layout's values where they are build variables (`sysusr_prefix` is `/usr`).
pub fn rules_vars(build_vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut vars = build_vars.clone();
    for (name, value, _) in BAKE_LAYOUT {
        if let Some(v) = vars.get_mut(*name) {
            *v = (*value).to_owned();
        }
    }
    vars
}

/// Where `path` goes in a baked image: `/usr` is the extension's, `/etc` and
/// `/opt` are ROOT's; anything else is no place for a node's file.
pub fn target_of(path: &str) -> Option<Target> {
    if path.starts_with("/usr/") {
        Some(Target::Sysext)
    } else if path.starts_with("/etc/") || path.starts_with("/opt/") {
        Some(Target::Root)
    } else {
        None
    }
}

fn is_baked(role: &str) -> bool {
    !NOT_BAKED.iter().any(|(name, _)| *name == role)
}

/// The variables in Ansible's order of precedence: every role's defaults (play
/// order), the build's extra vars, the bake's layout.
fn scope_for(roles: &[Role], build_vars: &BTreeMap<String, String>) -> anyhow::Result<Scope> {
    let mut scope = Scope::new();
    for role in roles {
        let from = format!("ansible/roles/{}/defaults/main.yml", role.name);
        for (name, raw) in &role.defaults {
            scope.set(name, raw.clone(), &from);
        }
    }
    for variable in ANSIBLE_ARGUMENTS {
        let Some(argument) = build_vars.get(*variable) else {
            bail!("the build's variables lack `{variable}`, which Packer passes to Ansible as --extra-vars");
        };
        let from = format!("the build's {variable}");
        for (name, value) in scope::extra_vars(argument, variable)? {
            scope.set(&name, Raw::Text(value), &from);
        }
    }
    for (name, value, _) in BAKE_LAYOUT {
        scope.set(
            name,
            Raw::Text((*value).to_owned()),
            "node_files::BAKE_LAYOUT",
        );
    }
    Ok(scope)
}

/// One run without `loop:`, else one per item.
fn loop_items(scope: &mut Scope, task: &Task) -> anyhow::Result<Vec<Option<Value>>> {
    let Some(over) = &task.loop_over else {
        return Ok(vec![None]);
    };
    let items = scope
        .evaluate(over, &[])
        .with_context(|| format!("{}: loop", task.at))?;
    if items.kind() != ValueKind::Seq {
        bail!("{}: `loop:` is {items:?}, not a list", task.at);
    }
    let iter = items
        .try_iter()
        .map_err(|e| anyhow::anyhow!("{}: `loop:`: {e}", task.at))?;
    Ok(iter.map(Some).collect())
}

fn arg(
    scope: &mut Scope,
    task: &Task,
    name: &str,
    locals: &[(&str, Value)],
) -> anyhow::Result<Value> {
    let Some(raw) = task.args.get(name) else {
        bail!("{}: task `{}` sets no `{name}`", task.at, task.name);
    };
    scope
        .evaluate(raw, locals)
        .with_context(|| format!("{}: `{name}` of task `{}`", task.at, task.name))
}

fn string_arg(
    scope: &mut Scope,
    task: &Task,
    name: &str,
    locals: &[(&str, Value)],
) -> anyhow::Result<String> {
    Ok(arg(scope, task, name, locals)?.to_string())
}

/// A module's boolean argument as Ansible reads it: text `yes`/`true`/`on`/`1` is true.
fn ansible_bool(value: &Value) -> bool {
    match value.as_str() {
        Some(text) => matches!(text.to_lowercase().as_str(), "yes" | "true" | "on" | "1"),
        None => value.is_true(),
    }
}

fn text(scope: &mut Scope, name: &str) -> anyhow::Result<String> {
    Ok(scope.value(name)?.to_string())
}

/// What an `ansible.builtin.template` task installs.
fn template_file(
    scope: &mut Scope,
    role: &Role,
    task: &Task,
    locals: &[(&str, Value)],
) -> anyhow::Result<NodeFile> {
    let src = string_arg(scope, task, "src", locals)?;
    let path = string_arg(scope, task, "dest", locals)?;
    let mode = string_arg(scope, task, "mode", locals)?;
    let mode = u32::from_str_radix(&mode, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("{}: mode `{mode}` is not octal permission bits", task.at))?;
    for owner in ["owner", "group"] {
        if task.args.contains_key(owner) && string_arg(scope, task, owner, locals)? != "root" {
            bail!("{}: a bake writes files owned by root only", task.at);
        }
    }
    let Some(target) = target_of(&path) else {
        bail!(
            "{}: {path}: a bake writes /usr (the extension) or /etc and /opt (ROOT) only",
            task.at
        );
    };
    let template = format!("ansible/roles/{}/templates/{src}", role.name);
    let Some(source) = role.templates.get(&src) else {
        bail!("{}: {template} does not exist", task.at);
    };
    Ok(NodeFile {
        target,
        contents: scope.render_template(&template, source)?,
        path,
        mode,
        template,
    })
}

/// `systemctl enable`'s links for `units`: one per target in the unit's
/// `WantedBy=` when the node's files hold the unit, else `multi-user.target`,
/// which Flatcar's own units (containerd.service) name.
fn unit_links(units: &[String], files: &[NodeFile], systemd_prefix: &str) -> Vec<UnitLink> {
    let mut links = Vec::new();
    for unit in units {
        let own = files
            .iter()
            .find(|f| f.path.rsplit_once('/').map(|(_, name)| name) == Some(unit.as_str()));
        let wanted_by: Vec<String> = match own {
            Some(file) => file
                .contents
                .lines()
                .filter_map(|l| l.trim().strip_prefix("WantedBy="))
                .flat_map(str::split_whitespace)
                .map(str::to_owned)
                .collect(),
            None => vec!["multi-user.target".to_owned()],
        };
        let points_to = own.map_or_else(|| format!("{VENDOR_UNIT_DIR}/{unit}"), |f| f.path.clone());
        for target in wanted_by {
            links.push(UnitLink {
                path: format!("{systemd_prefix}/system/{target}.wants/{unit}"),
                points_to: points_to.clone(),
            });
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::plan::{self, Provider};

    fn repository_files() -> NodeFiles {
        let roles = read(&crate::workspace::capi_dir()).unwrap();
        render(
            &roles,
            &plan::rendered_variables(Provider::Qemu, None, &BTreeMap::new()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn the_repository_roles_render_to_a_node_in_sysext_and_root() {
        let node = repository_files();
        let placed: Vec<(Target, &str, u32)> = node
            .files
            .iter()
            .map(|f| (f.target, f.path.as_str(), f.mode))
            .collect();
        assert_eq!(
            placed,
            [
                (Target::Root, "/etc/containerd/config.toml", 0o644),
                (
                    Target::Root,
                    "/etc/systemd/system/containerd.service.d/10-capi-config.conf",
                    0o644
                ),
                (Target::Root, "/etc/crictl.yaml", 0o644),
                (
                    Target::Sysext,
                    "/usr/lib/systemd/system/kubelet.service",
                    0o644
                ),
                (
                    Target::Sysext,
                    "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
                    0o644
                ),
                (Target::Root, "/etc/kubeadm.yml", 0o644),
                (Target::Root, "/etc/modules-load.d/kubernetes.conf", 0o644),
                (Target::Root, "/etc/sysctl.d/90-kubernetes.conf", 0o644),
            ]
        );
        let contents = |path: &str| &node.files.iter().find(|f| f.path == path).unwrap().contents;
        assert!(
            contents("/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf")
                .contains("ExecStart=/usr/bin/kubelet $KUBELET_KUBECONFIG_ARGS")
        );
        assert!(
            contents("/etc/systemd/system/containerd.service.d/10-capi-config.conf")
                .contains("ExecStart=/usr/bin/containerd --config /etc/containerd/config.toml\n")
        );
        let semver = &plan::rendered_variables(Provider::Qemu, None, &BTreeMap::new()).unwrap()
            ["kubernetes_semver"];
        assert!(contents("/etc/kubeadm.yml").contains(&format!("kubernetesVersion: {semver}\n")));
        assert!(contents("/etc/sysctl.d/90-kubernetes.conf").contains("\nkernel.panic = 10\n"));
        assert_eq!(
            node.enabled_units,
            [
                UnitLink {
                    path: "/etc/systemd/system/multi-user.target.wants/containerd.service".into(),
                    points_to: "/usr/lib/systemd/system/containerd.service".into(),
                },
                UnitLink {
                    path: "/etc/systemd/system/multi-user.target.wants/kubelet.service".into(),
                    points_to: "/usr/lib/systemd/system/kubelet.service".into(),
                },
            ]
        );
        assert_eq!(node.kubernetes_bin_dir, "/usr/bin");
        assert_eq!(node.cni_bin_dir, "/opt/cni/bin");
        assert_eq!(target_of(&node.cni_bin_dir), Some(Target::Root));
    }

    /// The three strings are what the playbook's provisioner really passes.
    #[test]
    fn the_ansible_arguments_are_the_provisioners() {
        let capi = crate::workspace::capi_dir();
        let doc = crate::packer::template::load(&capi, Provider::Qemu.target().template).unwrap();
        let template = crate::packer::template::Template::from_document(doc).0;
        let node = template
            .ansible
            .iter()
            .find(|a| a.playbook_file == "ansible/node.yml")
            .unwrap();
        let expected: Vec<String> = ANSIBLE_ARGUMENTS
            .iter()
            .flat_map(|v| ["--extra-vars".to_owned(), format!("{{{{user `{v}`}}}}")])
            .collect();
        assert_eq!(node.extra_arguments, expected);
    }

    #[test]
    fn the_build_variables_win_over_defaults_and_the_layout_over_both() {
        let roles = read(&crate::workspace::capi_dir()).unwrap();
        let mut vars = plan::rendered_variables(Provider::Qemu, None, &BTreeMap::new()).unwrap();
        vars.insert(
            "ansible_extra_vars".into(),
            "containerd_cri_socket=/run/other.sock sysusr_prefix=/elsewhere".into(),
        );
        let node = render(&roles, &vars).unwrap();
        let crictl = node
            .files
            .iter()
            .find(|f| f.path == "/etc/crictl.yaml")
            .unwrap();
        assert!(crictl.contents.contains("unix:///run/other.sock"));
        assert_eq!(node.kubernetes_bin_dir, "/usr/bin");
        vars.remove("ansible_os_vars");
        let error = render(&roles, &vars).unwrap_err().to_string();
        assert!(error.contains("lack `ansible_os_vars`"), "{error}");
    }

    #[test]
    fn a_task_the_bake_cannot_place_is_an_error() {
        let mut roles = read(&crate::workspace::capi_dir()).unwrap();
        let vars = plan::rendered_variables(Provider::Qemu, None, &BTreeMap::new()).unwrap();
        let node = roles.iter_mut().find(|r| r.name == "node").unwrap();
        let sysctl = node
            .tasks
            .iter_mut()
            .find(|t| t.module.ends_with("template"))
            .unwrap();
        sysctl
            .args
            .insert("dest".into(), Raw::Text("/var/lib/x.conf".into()));
        let error = format!("{:#}", render(&roles, &vars).unwrap_err());
        assert!(
            error.contains("ansible/roles/node/tasks/flatcar.yml:"),
            "{error}"
        );
        assert!(
            error.contains("/var/lib/x.conf: a bake writes /usr"),
            "{error}"
        );
        let node = roles.iter_mut().find(|r| r.name == "node").unwrap();
        node.tasks
            .iter_mut()
            .find(|t| t.module.ends_with("template"))
            .unwrap()
            .conditional = true;
        let error = render(&roles, &vars).unwrap_err().to_string();
        assert!(error.contains("`when:` condition"), "{error}");
    }

    /// The repository's node rules, compiled for a baked image: binaries in
    /// /usr/bin, and the rules that hold for build-flatcar only skipped with reasons.
    #[test]
    fn the_node_rules_compile_for_a_baked_image() {
        use crate::rules::{self, script, MadeBy, Stage};
        let mut vars =
            rules_vars(&plan::rendered_variables(Provider::Qemu, None, &BTreeMap::new()).unwrap());
        vars.insert("flatcar_version".into(), "4081.2.0".into());
        let loaded = rules::load(&crate::workspace::capi_dir(), Stage::Booted).unwrap();
        let files: Vec<(&str, &[rules::model::Rule])> =
            loaded.iter().map(|(f, r)| (*f, r.as_slice())).collect();
        let script = script::compile(&files, &vars, MadeBy::Bake).unwrap();
        assert!(
            script.contains("run 10 '/usr/bin/kubeadm version -o short'"),
            "{script}"
        );
        assert!(!script.contains("containerd-stress --version'"), "{script}");
        let skipped: Vec<&str> = script
            .lines()
            .filter_map(|l| l.strip_prefix("skip 'command "))
            .map(|l| l.split_once('\'').unwrap().0)
            .collect();
        assert_eq!(
            skipped,
            [
                "containerd release binaries are the build",
                "crictl images holds the pre-pulled control-plane images",
                "the build",
            ]
        );
    }

    #[test]
    fn module_booleans_read_like_ansibles() {
        for (value, expected) in [
            (Value::from(true), true),
            (Value::from("yes"), true),
            (Value::from("False"), false),
            (Value::from("no"), false),
        ] {
            assert_eq!(ansible_bool(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn the_rules_of_a_baked_image_see_the_layout() {
        let vars = BTreeMap::from([
            ("sysusr_prefix".to_owned(), "/opt".to_owned()),
            ("kubernetes_semver".to_owned(), "v1.36.2".to_owned()),
        ]);
        let baked = rules_vars(&vars);
        assert_eq!(baked["sysusr_prefix"], "/usr");
        assert_eq!(baked["kubernetes_semver"], "v1.36.2");
        assert_eq!(baked.len(), 2, "only build variables: {baked:?}");
    }
}
