//! age encryption (age-encryption.org/v1) to X25519 recipients: an exported audit bundle can be
//! sent to an auditor so that only the holder of their identity reads it.
//!
//! Thin on purpose: the `age` crate does the format; this module only parses recipients and
//! identity files (X25519 only: no passphrases, SSH keys or plugins) and maps errors. An age
//! file authenticates its payload, so a changed ciphertext fails to decrypt; decrypted bytes
//! are still verified by the audit bundle's own checks.

use std::io::{Read, Write};
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::CryptoError;

/// Encrypts `plaintext` to one recipient (`age1…`).
pub fn encrypt(recipient: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let recipient = age::x25519::Recipient::from_str(recipient.trim())
        .map_err(|_| CryptoError::InvalidFormat("not an age X25519 recipient (age1...)"))?;
    let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as _))
        .map_err(|_| CryptoError::InvalidFormat("age recipient refused"))?;
    let mut out = Vec::with_capacity(plaintext.len() + 256);
    let io = |_| CryptoError::InvalidFormat("age encryption failed");
    let mut writer = encryptor.wrap_output(&mut out).map_err(io)?;
    writer.write_all(plaintext).map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(out)
}

/// The identities of an age identity file (`AGE-SECRET-KEY-1…` lines, `#` comments). No
/// `Debug`: it holds private keys.
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl Identities {
    /// Parses an identity file's text.
    pub fn parse(text: &str) -> Result<Identities, CryptoError> {
        let bad = CryptoError::InvalidFormat("not an age identity file");
        let file = age::IdentityFile::from_buffer(text.as_bytes()).map_err(|_| bad.clone())?;
        let identities = file.into_identities().map_err(|_| bad.clone())?;
        if identities.is_empty() {
            return Err(bad);
        }
        Ok(Identities(identities))
    }

    /// Decrypts an age file. Fails for a file to another recipient and for any change to it.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let decryptor = age::Decryptor::new_buffered(ciphertext)
            .map_err(|_| CryptoError::InvalidFormat("not an age file"))?;
        let mut reader = decryptor
            .decrypt(self.0.iter().map(|i| i.as_ref() as &dyn age::Identity))
            .map_err(|_| CryptoError::InvalidFormat("no identity given can open this age file"))?;
        let mut out = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        reader
            .read_to_end(&mut out)
            .map_err(|_| CryptoError::Integrity)?;
        Ok(out)
    }
}

/// A fresh identity: the identity file text (secret) and its recipient (public).
pub fn generate() -> (Zeroizing<String>, String) {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let secret = Zeroizing::new(format!("{}\n", identity.to_string().expose_secret()));
    (secret, recipient)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let (identity, recipient) = generate();
        assert!(recipient.starts_with("age1"));
        assert!(identity.starts_with("AGE-SECRET-KEY-1"));
        let ids = Identities::parse(&identity).unwrap();
        let ct = encrypt(&recipient, b"entries").unwrap();
        assert!(ct.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(ids.decrypt(&ct).unwrap().as_slice(), b"entries");
        // Another identity cannot open it.
        let (other, _) = generate();
        assert!(Identities::parse(&other).unwrap().decrypt(&ct).is_err());
        // A changed byte in the payload is refused.
        let mut bad = ct.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(ids.decrypt(&bad).is_err());
        // Malformed inputs.
        assert!(encrypt("age1nope", b"x").is_err());
        assert!(Identities::parse("# only a comment\n").is_err());
        assert!(Identities::parse("AGE-SECRET-KEY-1XYZ\n").is_err());
        assert!(ids.decrypt(b"not age").is_err());
    }

    #[test]
    fn identity_files_with_comments_parse() {
        let (identity, recipient) = generate();
        let file = format!("# created: today\n# public key: {recipient}\n{}", *identity);
        let ids = Identities::parse(&file).unwrap();
        let ct = encrypt(&recipient, b"x").unwrap();
        assert_eq!(ids.decrypt(&ct).unwrap().as_slice(), b"x");
    }
}
