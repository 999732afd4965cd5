//! The libvirt Vagrant box of a qemu image, the shape build-flatcar's Packer
//! post-processor leaves and `verify-vagrant` boots: a tar of `box.img` (the
//! qcow2), `metadata.json` and a `Vagrantfile`. Not gzipped: the qcow2 inside is
//! compressed already, and vagrant unpacks plain tar as well.

use std::path::{Path, PathBuf};

use anyhow::Context;
use xshell::Shell;

use super::tar::{self, Kind, Stamp};
use crate::fsx::{write_atomically, AtomicFile};

const GIB: u64 = 1 << 30;

/// The box's `metadata.json` in vagrant-libvirt's first format: the provider, the
/// disk format, and the virtual size in whole GiB (rounded up: vagrant-libvirt
/// makes a volume of that size and uploads the image into it).
pub fn metadata_json(virtual_size: u64) -> String {
    let value = serde_json::json!({
        "format": "qcow2",
        "provider": "libvirt",
        "virtual_size": virtual_size.div_ceil(GIB),
    });
    serde_json::to_string_pretty(&value).expect("JSON serializes") + "\n"
}

/// The box's own Vagrantfile; the one that boots it supplies the rest.
pub const VAGRANTFILE: &str = "\
# The Vagrantfile inside a libvirt box made by `cargo xtask bake`. A Flatcar node
# has no SSH key of its own: the Vagrantfile that boots this box must hand it an
# Ignition config through fw_cfg, as `cargo xtask verify-vagrant` does.
Vagrant.configure(\"2\") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = \"virtio\"
  end
end
";

/// Writes `<out_dir>/<base_name>.box` holding the qcow2 `qcow2` as `box.img`,
/// every member with the mtime `mtime` (seconds since the epoch); returns its path.
pub fn write(
    sh: &Shell,
    qcow2: &Path,
    out_dir: &Path,
    base_name: &str,
    mtime: u64,
) -> anyhow::Result<PathBuf> {
    let path = out_dir.join(super::output_name(base_name, "box")?);
    let virtual_size = super::qcow2::virtual_size(&super::read_head(qcow2, 32)?)
        .with_context(|| format!("reading the header of {}", qcow2.display()))?;
    let staging = super::staging_dir(out_dir, base_name)?;
    super::link_or_copy(qcow2, &staging.path().join("box.img"))?;
    write_atomically(
        &staging.path().join("metadata.json"),
        metadata_json(virtual_size).as_bytes(),
    )?;
    write_atomically(&staging.path().join("Vagrantfile"), VAGRANTFILE.as_bytes())?;
    let file = AtomicFile::create(&path)?;
    let stamp = Stamp {
        uid: 0,
        gid: 0,
        mode: "u=rw,go=r",
        mtime,
    };
    tar::create(
        sh,
        staging.path(),
        &["metadata.json", "Vagrantfile", "box.img"],
        file.temp_path(),
        &stamp,
    )?;
    file.commit()?;
    Ok(path)
}

/// Checks a box as vagrant-libvirt reads it: the three members, metadata naming
/// libvirt and qcow2 with a virtual size that holds the image, and a qcow2 inside.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let entries = tar::list(path)?;
    let mut file = tar::open(path)?;
    let mut problems = Vec::new();
    let find = |name: &str| {
        entries
            .iter()
            .find(|e| e.name == name && e.kind == Kind::File)
    };
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    if names.len() != 3 {
        problems.push(format!(
            "it holds {names:?}, not box.img, metadata.json and Vagrantfile"
        ));
    }
    if find("Vagrantfile").is_none() {
        problems.push("it has no Vagrantfile".to_owned());
    }
    let image_size = match find("box.img") {
        None => {
            problems.push("it has no box.img".to_owned());
            None
        }
        Some(entry) => match super::qcow2::virtual_size(&tar::member_head(&mut file, entry, 32)?) {
            Ok(size) => Some(size),
            Err(err) => {
                problems.push(format!("box.img: {err}"));
                None
            }
        },
    };
    match find("metadata.json") {
        None => problems.push("it has no metadata.json".to_owned()),
        Some(entry) => {
            let text = tar::read_member(&mut file, entry, 64 * 1024)?;
            problems.extend(metadata_problems(&text, image_size));
        }
    }
    super::verdict(path, problems)
}

/// What vagrant-libvirt would refuse in `metadata.json`.
fn metadata_problems(text: &[u8], image_size: Option<u64>) -> Vec<String> {
    let value: serde_json::Value = match serde_json::from_slice(text) {
        Ok(value) => value,
        Err(err) => return vec![format!("metadata.json does not parse: {err}")],
    };
    let mut problems = Vec::new();
    for (key, expected) in [("provider", "libvirt"), ("format", "qcow2")] {
        if value[key] != expected {
            problems.push(format!(
                "metadata.json: `{key}` is {}, not \"{expected}\"",
                value[key]
            ));
        }
    }
    match (value["virtual_size"].as_u64(), image_size) {
        (None, _) => {
            problems.push("metadata.json: `virtual_size` is not a whole number of GiB".to_owned())
        }
        (Some(gib), Some(bytes)) if gib * GIB < bytes => problems.push(format!(
            "metadata.json: `virtual_size` {gib} GiB is smaller than box.img's {bytes} bytes"
        )),
        _ => {}
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_rounds_the_size_up_to_whole_gib() {
        expect_test::expect![[r#"
            {
              "format": "qcow2",
              "provider": "libvirt",
              "virtual_size": 9
            }
        "#]]
        .assert_eq(&metadata_json(8_589_934_592 + 512));
        assert!(metadata_problems(metadata_json(GIB).as_bytes(), Some(GIB)).is_empty());
    }

    #[test]
    fn metadata_problems_name_the_field() {
        let text = br#"{"provider": "virtualbox", "format": "vmdk", "virtual_size": 1}"#;
        expect_test::expect![[r#"
            [
                "metadata.json: `provider` is \"virtualbox\", not \"libvirt\"",
                "metadata.json: `format` is \"vmdk\", not \"qcow2\"",
                "metadata.json: `virtual_size` 1 GiB is smaller than box.img's 1073741825 bytes",
            ]
        "#]]
        .assert_debug_eq(&metadata_problems(text, Some(GIB + 1)));
        assert_eq!(
            metadata_problems(b"{", None)[0],
            "metadata.json does not parse: EOF while parsing an object at line 1 column 1"
        );
    }
}
