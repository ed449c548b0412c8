//! `keygen [--out DIR]`: the key pairs a host needs. `age.key` (the age identity: restore
//! and drill hosts only) with `age.pub`, and `signing.key` (the signing key: backup hosts
//! only) with `signing.pub` in minisign's format. Private files are created 0600 and never
//! overwrite anything; the public keys are printed as job-file lines.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use age::secrecy::ExposeSecret;

use super::Global;
use crate::error::{Error, Result};
use crate::minisign::SecretKey;

pub(super) fn keygen(g: &Global, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", out.display())))?;
    let names = ["age.key", "age.pub", "signing.key", "signing.pub"];
    if let Some(n) = names.iter().find(|n| out.join(n).exists()) {
        return Err(Error::refused(format!(
            "{} already exists; keygen never overwrites a key (move it away, or choose another --out)",
            out.join(n).display()
        )));
    }
    let age_id = age::x25519::Identity::generate();
    let age_pub = age_id.to_public().to_string();
    let sk = SecretKey::generate()?;
    let pk = sk.public();
    write_new(
        &out.join("age.key"),
        &format!(
            "# backstop age identity (restore and drill hosts only)\n# public key: {age_pub}\n{}\n",
            age_id.to_string().expose_secret()
        ),
        0o600,
    )?;
    write_new(&out.join("age.pub"), &format!("{age_pub}\n"), 0o644)?;
    write_new(&out.join("signing.key"), &sk.encode(), 0o600)?;
    write_new(
        &out.join("signing.pub"),
        &format!(
            "untrusted comment: minisign public key {}\n{}\n",
            pk.id_hex(),
            pk.encode()
        ),
        0o644,
    )?;
    if g.json {
        super::print_json(&serde_json::json!({
            "age_recipient": age_pub,
            "age_identity_file": out.join("age.key"),
            "signing_public_key": pk.encode(),
            "signing_key_file": out.join("signing.key"),
        }));
        return Ok(());
    }
    let dir = out.canonicalize().unwrap_or_else(|_| out.to_path_buf());
    super::print_line(&format!(
        "[encryption]\nrecipients = [\"{age_pub}\"]\n# identity_file = \"{}\"   # restore and drill hosts only\n\n\
         [signing]\nkey_file = \"{}\"   # backup hosts only\ntrusted = [\"{}\"]",
        dir.join("age.key").display(),
        dir.join("signing.key").display(),
        pk.encode()
    ));
    Ok(())
}

/// Create `path` with `mode`, failing if anything is there already.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::failed(format!("cannot create {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}
