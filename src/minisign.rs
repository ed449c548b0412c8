//! minisign's key and signature format, so anyone can check a snapshot's signature by
//! hand with `minisign -Vm manifest.json -P PUBLIC_KEY`. Which objects are signed, and
//! when a signature is required, is `snapshot::sign`'s business.
//!
//! May import: error.
//!
//! Format (minisign, legacy Ed25519 algorithm "Ed": the signature covers the file's bytes):
//! public key `base64("Ed" || key_id[8] || public_key[32])`; signature file
//! `untrusted comment: ...`, `base64("Ed" || key_id || signature[64])`,
//! `trusted comment: TEXT`, `base64(global_signature[64])` where the global signature
//! covers `signature || TEXT`. backstop's own secret key file is
//! `base64("Ed" || key_id || secret_key[32] || public_key[32])` after one comment line: it
//! is not minisign's (password-encrypted) secret key format.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

use crate::error::{Error, Result};

const ALG: &[u8; 2] = b"Ed";

/// The suffix of a signature object.
pub const SUFFIX: &str = ".minisig";

/// The most a signature object may hold.
pub const SIG_MAX: u64 = 4096;

/// A public key a job trusts.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: [u8; 8],
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id_hex())
    }
}

impl PublicKey {
    /// Parse minisign's public key line (`RWQ...`), or a whole `.pub` file's text.
    pub fn parse(text: &str) -> std::result::Result<PublicKey, String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .unwrap_or("");
        let raw = B64.decode(line).map_err(|_| {
            format!("{line:?} is not a minisign public key (base64, starts with RW)")
        })?;
        if raw.len() != 42 || &raw[..2] != ALG {
            return Err(format!(
                "{line:?} is not an Ed25519 minisign public key (expected 42 bytes starting with \"Ed\")"
            ));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut pk = [0u8; 32];
        pk.copy_from_slice(&raw[10..42]);
        let key = VerifyingKey::from_bytes(&pk)
            .map_err(|e| format!("{line:?} is not a valid Ed25519 public key: {e}"))?;
        Ok(PublicKey { id, key })
    }

    /// The key as minisign writes it (`RWQ...`).
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(42);
        raw.extend_from_slice(ALG);
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(self.key.as_bytes());
        B64.encode(raw)
    }

    /// The key id as minisign shows it (upper-case hex, little-endian).
    pub fn id_hex(&self) -> String {
        self.id.iter().rev().map(|b| format!("{b:02X}")).collect()
    }
}

/// A signing key, loaded from its file.
pub struct SecretKey {
    id: [u8; 8],
    key: SigningKey,
}

impl SecretKey {
    /// A new random key pair.
    pub fn generate() -> Result<SecretKey> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::fill(&mut seed)
            .and_then(|()| getrandom::fill(&mut id))
            .map_err(|e| Error::failed(format!("no randomness for a new key: {e}")))?;
        Ok(SecretKey {
            id,
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// The secret key file's text.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(74);
        raw.extend_from_slice(ALG);
        raw.extend_from_slice(&self.id);
        raw.extend_from_slice(&self.key.to_bytes());
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "untrusted comment: backstop signing secret key {} (keep private; not minisign's secret key format)\n{}\n",
            self.public().id_hex(),
            B64.encode(raw)
        )
    }

    /// Load a secret key file (as `keygen` writes it).
    pub fn load(path: &Path) -> Result<SecretKey> {
        let bad = |why: String| {
            Error::config(format!(
                "signing.key_file {}: {why}; create one with `backstop keygen`",
                path.display()
            ))
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
        Self::load_from_text(&text).map_err(bad)
    }

    fn load_from_text(text: &str) -> std::result::Result<SecretKey, String> {
        let bad = |s: &str| s.to_string();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .unwrap_or("");
        let raw = B64
            .decode(line)
            .map_err(|_| bad("it is not a backstop signing key"))?;
        if raw.len() != 74 || &raw[..2] != ALG {
            return Err(bad("it is not a backstop signing key"));
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&raw[2..10]);
        let mut sk = [0u8; 32];
        sk.copy_from_slice(&raw[10..42]);
        let key = SigningKey::from_bytes(&sk);
        if key.verifying_key().as_bytes() != &raw[42..74] {
            return Err(bad("its public half does not match its secret half"));
        }
        Ok(SecretKey { id, key })
    }

    /// The signature file for `data`, with `comment` as minisign's trusted comment.
    pub fn sign(&self, data: &[u8], comment: &str) -> String {
        let comment = one_line(comment);
        let sig = self.key.sign(data);
        let mut global_msg = sig.to_bytes().to_vec();
        global_msg.extend_from_slice(comment.as_bytes());
        let global = self.key.sign(&global_msg);
        let mut line = Vec::with_capacity(74);
        line.extend_from_slice(ALG);
        line.extend_from_slice(&self.id);
        line.extend_from_slice(&sig.to_bytes());
        format!(
            "untrusted comment: signature from backstop key {}\n{}\ntrusted comment: {comment}\n{}\n",
            self.public().id_hex(),
            B64.encode(line),
            B64.encode(global.to_bytes())
        )
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect()
}

/// Whether `sig` (a signature file's text) is a good signature of `data` by one of
/// `trusted`: `Ok(key)` names the key, `Err` says why not.
pub fn verify<'a>(
    data: &[u8],
    sig: &[u8],
    trusted: &'a [PublicKey],
) -> std::result::Result<&'a PublicKey, String> {
    let text = std::str::from_utf8(sig).map_err(|_| "the signature is not text".to_string())?;
    let mut lines = text.lines();
    let _untrusted = lines.next().ok_or("the signature is empty")?;
    let sig_line = lines.next().ok_or("the signature has no signature line")?;
    let comment_line = lines.next().ok_or("the signature has no trusted comment")?;
    let global_line = lines
        .next()
        .ok_or("the signature has no global signature")?;
    let comment = comment_line
        .strip_prefix("trusted comment: ")
        .ok_or("the signature's third line is not a trusted comment")?;
    let raw = B64
        .decode(sig_line.trim())
        .map_err(|_| "the signature line is not base64")?;
    if raw.len() != 74 || &raw[..2] != ALG {
        return Err("the signature is not an Ed25519 minisign signature".into());
    }
    let key = trusted
        .iter()
        .find(|k| k.id == raw[2..10])
        .ok_or("it is signed by a key the job does not trust")?;
    let sig = Signature::from_slice(&raw[10..74]).map_err(|e| e.to_string())?;
    key.key
        .verify(data, &sig)
        .map_err(|_| "the signature does not match the object (it was changed or forged)")?;
    let global = B64
        .decode(global_line.trim())
        .map_err(|_| "the global signature is not base64")?;
    let global = Signature::from_slice(&global).map_err(|e| e.to_string())?;
    let mut msg = raw[10..74].to_vec();
    msg.extend_from_slice(comment.as_bytes());
    key.key
        .verify(&msg, &global)
        .map_err(|_| "the trusted comment was changed".to_string())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip_and_tampering_is_caught() {
        let sk = SecretKey::generate().unwrap();
        let pk = sk.public();
        assert_eq!(PublicKey::parse(&pk.encode()).unwrap(), pk);
        let loaded = SecretKey::load_from_text(&sk.encode()).unwrap();
        assert_eq!(loaded.public(), pk);
        let sig = sk.sign(b"manifest", "backstop job=app snapshot=x");
        let trusted = [pk.clone()];
        assert!(verify(b"manifest", sig.as_bytes(), &trusted).is_ok());
        assert!(verify(b"manifesT", sig.as_bytes(), &trusted).is_err());
        let other = SecretKey::generate().unwrap();
        assert!(verify(b"manifest", sig.as_bytes(), &[other.public()]).is_err());
        let forged = other.sign(b"manifest", "x");
        assert!(verify(b"manifest", forged.as_bytes(), &trusted).is_err());
        let changed = sig.replace("snapshot=x", "snapshot=y");
        assert!(verify(b"manifest", changed.as_bytes(), &trusted).is_err());
        assert!(verify(b"manifest", b"garbage", &trusted).is_err());
    }
}

#[cfg(test)]
mod minisign_cli {
    /// The real minisign program accepts our public keys and signatures.
    #[test]
    fn minisign_verifies_by_hand() {
        let Ok(out) = std::process::Command::new("minisign").arg("-v").output() else {
            panic!("the minisign program is needed by this test (apt-get install minisign)");
        };
        assert!(out.status.success());
        let dir = tempfile::tempdir().unwrap();
        let sk = super::SecretKey::generate().unwrap();
        let data = b"{\"job\":\"app\"}\n";
        std::fs::write(dir.path().join("manifest.json"), data).unwrap();
        std::fs::write(
            dir.path().join("manifest.json.minisig"),
            sk.sign(data, "backstop job=app"),
        )
        .unwrap();
        let out = std::process::Command::new("minisign")
            .arg("-Vm")
            .arg(dir.path().join("manifest.json"))
            .arg("-P")
            .arg(sk.public().encode())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("backstop job=app"));
        std::fs::write(dir.path().join("manifest.json"), b"{\"job\":\"evil\"}\n").unwrap();
        let out = std::process::Command::new("minisign")
            .arg("-Vm")
            .arg(dir.path().join("manifest.json"))
            .arg("-P")
            .arg(sk.public().encode())
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
}
