//! The two paths cannot drift: real ansible-playbook renders every template of
//! every role of the play with the bake's variables (the same extra vars, the
//! layout as one more `--extra-vars` layer), and each result must equal, byte for
//! byte, what the bake renders.

use std::fmt::Write as _;
use std::path::Path;

use crate::build::plan::{self, Provider};
use crate::toolchain::tools;

/// A stand-in for each role of the play: the real defaults and templates (linked),
/// and one task per template that renders it into `out/<role>/<template>`.
fn write_roles(roles: &[super::Role], capi: &Path, dir: &Path, out: &Path) {
    for role in roles {
        let real = capi.join("ansible/roles").join(&role.name);
        let stand_in = dir.join("roles").join(&role.name);
        std::fs::create_dir_all(stand_in.join("tasks")).unwrap();
        std::fs::create_dir_all(out.join(&role.name)).unwrap();
        std::os::unix::fs::symlink(real.join("defaults"), stand_in.join("defaults")).unwrap();
        let mut tasks = "---\n- name: Nothing\n  ansible.builtin.meta: noop\n".to_owned();
        if !role.templates.is_empty() {
            std::os::unix::fs::symlink(real.join("templates"), stand_in.join("templates")).unwrap();
        }
        for name in role.templates.keys() {
            let dest = out.join(&role.name).join(name);
            write!(
                tasks,
                "- name: Render {name}\n  ansible.builtin.template:\n    src: {name}\n    dest: {}\n    mode: \"0644\"\n",
                dest.display()
            )
            .unwrap();
        }
        std::fs::write(stand_in.join("tasks/main.yml"), tasks).unwrap();
    }
}

#[test]
fn ansible_renders_every_template_as_the_bake_does() {
    let capi = crate::workspace::capi_dir();
    let roles = super::read(&capi).unwrap();
    let build_vars = plan::rendered_variables(Provider::Qemu, None, &Default::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    write_roles(&roles, &capi, dir.path(), &out);
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let playbook = format!(
        "---\n- name: Render the templates\n  hosts: localhost\n  connection: local\n  gather_facts: false\n  roles: [{}]\n",
        names.join(", ")
    );
    std::fs::write(dir.path().join("play.yml"), playbook).unwrap();
    // The layout as Ansible's last layer; the interpreter is this machine's, not Flatcar's.
    let mut layout: serde_json::Map<String, serde_json::Value> = super::BAKE_LAYOUT
        .iter()
        .map(|(name, value, _)| (name.to_string(), (*value).into()))
        .collect();
    layout.insert(
        "ansible_python_interpreter".into(),
        "{{ ansible_playbook_python }}".into(),
    );
    let layout_file = dir.path().join("layout.json");
    std::fs::write(&layout_file, serde_json::Value::Object(layout).to_string()).unwrap();

    let playbook = tools::find_program("ansible-playbook")
        .expect("ansible-playbook is installed (cargo xtask deps --install)");
    let mut command = std::process::Command::new(playbook);
    command
        .current_dir(dir.path())
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("tmp"))
        .env("ANSIBLE_REMOTE_TEMP", dir.path().join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .args(["--inventory", "localhost,", "play.yml"]);
    for variable in super::ANSIBLE_ARGUMENTS {
        command.args(["--extra-vars", &build_vars[*variable]]);
    }
    command
        .arg("--extra-vars")
        .arg(format!("@{}", layout_file.display()));
    let ran = command.output().unwrap();
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );

    let mut scope = super::scope_for(&roles, &build_vars).unwrap();
    let mut compared = 0;
    for role in &roles {
        for (name, source) in &role.templates {
            let ours = scope
                .render_template(
                    &format!("ansible/roles/{}/templates/{name}", role.name),
                    source,
                )
                .unwrap();
            let theirs = std::fs::read_to_string(out.join(&role.name).join(name)).unwrap();
            assert_eq!(ours, theirs, "roles/{}/templates/{name}", role.name);
            compared += 1;
        }
    }
    // Every template of the play, those a bake installs among them.
    assert!(compared >= 10, "{compared} templates");
    let installed = super::render(&roles, &build_vars).unwrap();
    assert_eq!(installed.files.len(), 8);
}
