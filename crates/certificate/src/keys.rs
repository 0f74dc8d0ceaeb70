//! Public keys as text, for the verifier's command line.

use audit::checkpoint::VerifierKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crypto::sign::VerifyingKey;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTextError {
    #[error(
        "not a public key: expected a C2SP verifier key (name+keyid+base64), or 32 bytes of \
         Ed25519 public key as base64 or hex"
    )]
    Service,
    #[error("not a log verifier key (name+keyid+base64): {0}")]
    Log(String),
}

/// Names a signing key: lowercase hex of the first 8 bytes of SHA-256(public key).
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&crypto::hash::sha256(key.as_bytes())[..8])
}

/// The service's public key: a C2SP verifier key (`name+keyid+base64(0x01 || key)`, the same
/// form as the log key; its key id is checked), or the bare 32-byte key as standard base64 or
/// as 64 hex digits. Surrounding whitespace is ignored.
pub fn parse_service_key(text: &str) -> Result<VerifyingKey, KeyTextError> {
    let text = text.trim();
    if let Ok(vkey) = VerifierKey::parse(text) {
        return Ok(vkey.key);
    }
    // A verifier key is at least 55 characters, so it never passes for the bare forms below.
    if text.len() == 64
        && let Ok(bytes) = hex::decode(text)
    {
        return VerifyingKey::from_slice(&bytes).map_err(|_| KeyTextError::Service);
    }
    let bytes = B64.decode(text).map_err(|_| KeyTextError::Service)?;
    VerifyingKey::from_slice(&bytes).map_err(|_| KeyTextError::Service)
}

/// The audit log's verifier key (C2SP form, which carries the key name the checkpoint is
/// signed under). Surrounding whitespace is ignored.
pub fn parse_log_key(text: &str) -> Result<VerifierKey, KeyTextError> {
    VerifierKey::parse(text.trim()).map_err(|e| KeyTextError::Log(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn service_keys_parse_in_every_form() {
        let (sk, _) = crypto::sign::SigningKey::generate().unwrap();
        let vk = sk.public_key();
        let vkey = VerifierKey::new("custody.example/deletion", vk.clone())
            .unwrap()
            .to_string();
        assert_eq!(parse_service_key(&vkey).unwrap(), vk);
        assert_eq!(parse_service_key(&format!(" {vkey}\n")).unwrap(), vk);
        assert_eq!(parse_service_key(&hex::encode(vk.as_bytes())).unwrap(), vk);
        assert_eq!(parse_service_key(&B64.encode(vk.as_bytes())).unwrap(), vk);
        for bad in ["", "abc", &hex::encode([0u8; 31]), &B64.encode([0u8; 33])] {
            assert_eq!(parse_service_key(bad), Err(KeyTextError::Service), "{bad}");
        }
        // A verifier key with a wrong key id is refused, not read as base64.
        let parts: Vec<&str> = vkey.splitn(3, '+').collect();
        let wrong = format!("{}+00000000+{}", parts[0], parts[2]);
        assert!(parse_service_key(&wrong).is_err());
        assert!(parse_log_key(&wrong).is_err());
        assert_eq!(parse_log_key(&vkey).unwrap().key, vk);
        assert!(parse_log_key(&hex::encode(vk.as_bytes())).is_err());
        assert_eq!(key_id(&vk).len(), 16);
    }
}
