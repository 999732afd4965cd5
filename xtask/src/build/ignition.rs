//! The first-boot Ignition config a build hands to Flatcar through QEMU `fw_cfg`:
//! the repository's config, with the build's public key authorized for `core`.

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The user Packer and vagrant log in as on Flatcar.
pub const USER: &str = "core";

/// Returns `config` with `public_key` as the only SSH key of the `core` user (the
/// user is added when the config does not list it).
pub fn authorize_key(mut config: Value, public_key: &str) -> anyhow::Result<Value> {
    let version = config
        .pointer("/ignition/version")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !version.starts_with("3.") {
        bail!("the Ignition config has version {version:?}; Flatcar needs spec 3.x (\"ignition\": {{\"version\": \"3.3.0\"}})");
    }
    let root = config
        .as_object_mut()
        .context("an Ignition config is a JSON object")?;
    let passwd = root.entry("passwd").or_insert_with(|| json!({}));
    let users = passwd
        .as_object_mut()
        .context("`passwd` in the Ignition config must be an object")?
        .entry("users")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .context("`passwd.users` in the Ignition config must be a list")?;
    let keys = json!([public_key]);
    match users
        .iter_mut()
        .find(|u| u.get("name").and_then(Value::as_str) == Some(USER))
    {
        Some(user) => {
            user.as_object_mut()
                .context("each entry of `passwd.users` must be an object")?
                .insert("sshAuthorizedKeys".into(), keys);
        }
        None => users.push(json!({ "name": USER, "sshAuthorizedKeys": keys })),
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_core_users_keys() {
        let config = json!({
            "ignition": {"version": "3.3.0"},
            "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": []}, {"name": "other"}]},
            "systemd": {"units": [{"name": "update-engine.service", "mask": true}]}
        });
        let out = authorize_key(config, "ssh-ed25519 AAAA build").unwrap();
        assert_eq!(
            out["passwd"]["users"][0]["sshAuthorizedKeys"],
            json!(["ssh-ed25519 AAAA build"])
        );
        assert_eq!(out["passwd"]["users"][1], json!({"name": "other"}));
        assert_eq!(out["systemd"]["units"][0]["mask"], json!(true));
    }

    #[test]
    fn adds_core_when_missing() {
        let out =
            authorize_key(json!({"ignition": {"version": "3.4.0"}}), "ssh-ed25519 K").unwrap();
        assert_eq!(
            out["passwd"]["users"],
            json!([{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 K"]}])
        );
    }

    #[test]
    fn refuses_spec_2_configs() {
        let err = authorize_key(json!({"ignition": {"version": "2.3.0"}}), "k").unwrap_err();
        assert!(err.to_string().contains("spec 3.x"), "{err}");
    }
}
