//! Vagrant and libvirt as the builder uses them: the names of the boxes it makes,
//! the Vagrantfile that boots one (a fresh Ignition config through `fw_cfg`, since
//! a node image carries no SSH key of its own), and reading `vagrant box list`,
//! `vagrant global-status` and `virsh vol-list`.

use std::path::Path;

use crate::flatcar::release::{Channel, Version};
use crate::vm::accelerator::Accelerator;

/// The libvirt connection vagrant-libvirt and virsh use: `LIBVIRT_DEFAULT_URI`, else
/// the system daemon.
pub fn libvirt_uri() -> String {
    std::env::var("LIBVIRT_DEFAULT_URI").unwrap_or_else(|_| "qemu:///system".to_owned())
}

/// The box name for a release: `flatcar-<channel>-<version>`.
pub fn box_name(channel: &str, version: &str) -> String {
    format!("flatcar-{channel}-{version}")
}

/// `(channel, version)` when `name` is a box name this tool makes: a live
/// channel spelled as this tool spells it, and a release version.
pub fn parse_box_name(name: &str) -> Option<(Channel, Version)> {
    let rest = name.strip_prefix("flatcar-")?;
    let (channel, version) = rest.split_once('-')?;
    let channel = Channel::ALL.into_iter().find(|c| c.name() == channel)?;
    Some((channel, version.parse().ok()?))
}

/// How the verify VM is set up.
pub struct VagrantfileSpec<'a> {
    pub box_name: &'a str,
    pub private_key: &'a Path,
    pub ignition_config: &'a Path,
    pub accelerator: Accelerator,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// A Vagrantfile that boots `box_name` on libvirt and hands it an Ignition config
/// authorizing the verify key: the box has no key of its own, and Ignition runs
/// on its first boot. Every string is a single-quoted Ruby literal, so no value
/// (a path, a name read from build.json) can interpolate `#{...}` into code.
pub fn render_vagrantfile(spec: &VagrantfileSpec<'_>) -> String {
    let fw_cfg = format!(
        "name=opt/org.flatcar-linux/config,file={}",
        spec.ignition_config.display()
    );
    format!(
        r#"# Written by `cargo xtask verify-vagrant`; boots the box below under libvirt.
Vagrant.configure("2") do |config|
  config.vm.box = {box_name}
  config.vm.hostname = {box_name}
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.ssh.username = "core"
  config.ssh.private_key_path = {key}
  config.ssh.insert_key = false
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "{driver}"
    libvirt.memory = {memory}
    libvirt.cpus = {cpus}
    libvirt.qemuargs :value => "-fw_cfg"
    libvirt.qemuargs :value => {fw_cfg}
  end
end
"#,
        box_name = ruby_literal(spec.box_name),
        key = ruby_literal(&spec.private_key.display().to_string()),
        driver = spec.accelerator.libvirt_driver(),
        memory = spec.memory_mib,
        cpus = spec.cpus,
        fw_cfg = ruby_literal(&fw_cfg),
    )
}

/// `text` as a single-quoted Ruby string: only `\\` and `\'` are special there.
fn ruby_literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Box names with their provider from `vagrant box list` (`name (provider, version)`).
pub fn parse_box_list(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(' ')?;
            let provider = rest.trim().strip_prefix('(')?.split(',').next()?.trim();
            Some((name.to_owned(), provider.to_owned()))
        })
        .collect()
}

/// Volumes in a libvirt pool from `virsh vol-list --pool <pool>` (name, path).
pub fn parse_vol_list(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("---"))
        .skip(1)
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_owned(),
                parts.next().unwrap_or("").to_owned(),
            ))
        })
        .collect()
}

/// The libvirt volumes vagrant-libvirt made for `box_name`
/// (`<box>_vagrant_box_image_<version>_<timestamp>_box.img`).
pub fn box_volumes<'a>(volumes: &'a [(String, String)], box_name: &str) -> Vec<&'a str> {
    let prefix = format!("{box_name}_vagrant_box_image_");
    volumes
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// One machine from `vagrant global-status`: id, name, provider, state, directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    pub state: String,
    pub directory: String,
}

pub fn parse_global_status(output: &str) -> Vec<Machine> {
    output
        .lines()
        .skip_while(|l| !l.starts_with("---"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            match parts.as_slice() {
                [id, _name, _provider, state, directory, ..] => Some(Machine {
                    id: (*id).to_owned(),
                    state: (*state).to_owned(),
                    directory: (*directory).to_owned(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_names_round_trip_and_foreign_names_are_refused() {
        assert_eq!(box_name("stable", "4081.2.0"), "flatcar-stable-4081.2.0");
        let parsed = |name| parse_box_name(name).map(|(c, v)| (c.name(), v.to_string()));
        assert_eq!(
            parsed("flatcar-stable-4081.2.0"),
            Some(("stable", "4081.2.0".to_owned()))
        );
        assert_eq!(
            parsed("flatcar-lts-3510.3.6"),
            Some(("lts", "3510.3.6".to_owned()))
        );
        assert_eq!(parse_box_name("flatcar-Stable-4081.2.0"), None);
        assert_eq!(parse_box_name("flatcar-edge-2000.0.0"), None);
        assert_eq!(parse_box_name("flatcar-stable-current"), None);
        assert_eq!(parse_box_name("generic/debian12"), None);
        assert_eq!(parse_box_name("flatcar-stable-4081.2.0-mine"), None);
    }

    #[test]
    fn vagrantfile_hands_over_ignition_and_key() {
        let text = render_vagrantfile(&VagrantfileSpec {
            box_name: "flatcar-stable-4081.2.0",
            private_key: Path::new("/work/verify/id_ed25519"),
            ignition_config: Path::new("/work/verify/ignition.json"),
            accelerator: Accelerator::Tcg,
            memory_mib: 2048,
            cpus: 2,
        });
        expect_test::expect![[r#"
            # Written by `cargo xtask verify-vagrant`; boots the box below under libvirt.
            Vagrant.configure("2") do |config|
              config.vm.box = 'flatcar-stable-4081.2.0'
              config.vm.hostname = 'flatcar-stable-4081.2.0'
              config.vm.synced_folder ".", "/vagrant", disabled: true
              config.ssh.username = "core"
              config.ssh.private_key_path = '/work/verify/id_ed25519'
              config.ssh.insert_key = false
              config.vm.provider :libvirt do |libvirt|
                libvirt.driver = "qemu"
                libvirt.memory = 2048
                libvirt.cpus = 2
                libvirt.qemuargs :value => "-fw_cfg"
                libvirt.qemuargs :value => 'name=opt/org.flatcar-linux/config,file=/work/verify/ignition.json'
              end
            end
        "#]]
        .assert_eq(&text);
    }

    #[test]
    fn finding_12_ruby_literals_cannot_interpolate() {
        assert_eq!(ruby_literal("plain"), "'plain'");
        assert_eq!(
            ruby_literal("a#{system('x')}\\b"),
            "'a#{system(\\'x\\')}\\\\b'"
        );
    }

    #[test]
    fn reads_vagrant_and_virsh_listings() {
        let boxes =
            "flatcar-stable-4081.2.0 (libvirt, 0)\ngeneric/debian12        (virtualbox, 4.3.12)\n";
        assert_eq!(
            parse_box_list(boxes),
            vec![
                ("flatcar-stable-4081.2.0".to_owned(), "libvirt".to_owned()),
                ("generic/debian12".to_owned(), "virtualbox".to_owned())
            ]
        );
        let vols = " Name                                                               Path\n\
                    --------------------------------------------------------------------------------------\n \
                    flatcar-stable-4081.2.0_vagrant_box_image_0_1732431234_box.img   /var/lib/libvirt/images/flatcar-stable-4081.2.0_vagrant_box_image_0_1732431234_box.img\n \
                    other.qcow2   /var/lib/libvirt/images/other.qcow2\n";
        let parsed = parse_vol_list(vols);
        assert_eq!(parsed.len(), 2);
        assert_eq!(
            box_volumes(&parsed, "flatcar-stable-4081.2.0"),
            vec!["flatcar-stable-4081.2.0_vagrant_box_image_0_1732431234_box.img"]
        );
        let status = "id       name    provider state   directory\n\
                      ------------------------------------------------------------------------\n\
                      1a2b3c4  default libvirt running /work/out/verify\n\
                      \n\
                      The above shows information about all known Vagrant environments\n";
        assert_eq!(
            parse_global_status(status),
            vec![Machine {
                id: "1a2b3c4".into(),
                state: "running".into(),
                directory: "/work/out/verify".into()
            }]
        );
    }
}
