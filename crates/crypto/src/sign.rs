//! Ed25519 signatures (RFC 8032), for signing audit-log checkpoints.
//!
//! [`SigningKey`] keeps only the 32-byte seed and the public key; the seed sits on the heap and
//! is wiped on drop. ring's key pair is rebuilt from the seed for each signature and dropped right
//! after (ring does not wipe its own copy of the expanded key; as with AES key schedules, we
//! accept that for a value that lives only for the duration of one `sign` call). Checkpoints are
//! signed rarely, so the extra scalar multiplication per signature does not matter.
//!
//! The private key is persisted as PKCS#8 v2 (RFC 5958, ring's format): [`SigningKey::generate`]
//! hands the document back in a [`Zeroizing`] buffer for the caller to store.

use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CryptoError;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// DER prefix of an Ed25519 PKCS#8 document after the outer SEQUENCE header: version (0 or 1),
/// the algorithm identifier 1.3.101.112, and the OCTET STRING wrapping the 32-byte seed.
const PKCS8_ALG_AND_SEED_PREFIX: [u8; 11] = [
    0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// An Ed25519 private key. Wiped on drop; deliberately not `Debug`, `Display` or `Clone`.
pub struct SigningKey {
    seed: Box<[u8; 32]>,
    public: VerifyingKey,
}

impl Zeroize for SigningKey {
    fn zeroize(&mut self) {
        self.seed.as_mut_slice().zeroize();
    }
}

impl Drop for SigningKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SigningKey {}

impl SigningKey {
    /// A fresh key from the operating system's CSPRNG, with its PKCS#8 v2 encoding (to be stored
    /// by the caller, e.g. in the key store; never in the database).
    pub fn generate() -> Result<(SigningKey, Zeroizing<Vec<u8>>), CryptoError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| CryptoError::Random)?;
        let pkcs8 = Zeroizing::new(doc.as_ref().to_vec());
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }

    /// Loads a PKCS#8 v2 document (as written by [`SigningKey::generate`]); the embedded public
    /// key must match the private key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, CryptoError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|_| CryptoError::InvalidFormat("not an ed25519 pkcs#8 v2 private key"))?;
        // ring accepted the document, so it is: SEQUENCE { INTEGER version, AlgorithmIdentifier,
        // OCTET STRING { OCTET STRING seed }, [1] public key }. Take the seed from its fixed place.
        let shape_ok = pkcs8.len() >= 16 + 32
            && pkcs8[0] == 0x30
            && pkcs8[1] < 0x80
            && pkcs8[2..4] == [0x02, 0x01]
            && pkcs8[4] <= 1
            && pkcs8[5..16] == PKCS8_ALG_AND_SEED_PREFIX;
        if !shape_ok {
            return Err(CryptoError::InvalidFormat(
                "unexpected layout of ed25519 pkcs#8 document",
            ));
        }
        let mut seed = Box::new([0u8; 32]);
        seed.copy_from_slice(&pkcs8[16..48]);
        let mut public = [0u8; PUBLIC_KEY_LEN];
        public.copy_from_slice(pair.public_key().as_ref());
        let key = SigningKey {
            seed,
            public: VerifyingKey(public),
        };
        // The seed we extracted must be the one ring parsed.
        key.pair()?;
        Ok(key)
    }

    fn pair(&self) -> Result<Ed25519KeyPair, CryptoError> {
        Ed25519KeyPair::from_seed_and_public_key(self.seed.as_slice(), &self.public.0)
            .map_err(|_| CryptoError::InvalidFormat("ed25519 seed and public key do not match"))
    }

    /// The public half.
    pub fn public_key(&self) -> VerifyingKey {
        self.public.clone()
    }

    /// Signs `msg` (pure Ed25519, no prehash).
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        // `pair()` succeeded when the key was constructed, and the seed and public key are
        // immutable since, so this cannot fail; an all-zero signature would fail to verify.
        if let Ok(pair) = self.pair() {
            out.copy_from_slice(pair.sign(msg).as_ref());
        }
        out
    }
}

/// An Ed25519 public key (32 bytes, RFC 8032 encoding).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifyingKey([u8; PUBLIC_KEY_LEN]);

impl VerifyingKey {
    /// Wraps 32 bytes. Whether they encode a valid point is only checked by [`Self::verify`],
    /// which fails for an invalid key.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> VerifyingKey {
        VerifyingKey(bytes)
    }

    /// Like [`Self::from_bytes`], from a slice that must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<VerifyingKey, CryptoError> {
        let arr: [u8; PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| CryptoError::InvalidFormat("ed25519 public key must be 32 bytes"))?;
        Ok(VerifyingKey(arr))
    }

    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.0
    }

    /// True if `sig` is a valid signature of `msg` under this key.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        sig.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&ED25519, &self.0)
                .verify(msg, sig)
                .is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 8032 section 7.1, TEST 1 (empty message).
    const T1_SECRET: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const T1_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const T1_SIG: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
                          5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b";
    // RFC 8032 section 7.1, TEST 2 (one byte 0x72).
    const T2_PUBLIC: &str = "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
    const T2_SIG: &str = "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da\
                          085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00";

    /// A PKCS#8 v2 document (RFC 5958/8410) wrapping the RFC's secret and public key.
    fn pkcs8_v2(seed: &[u8], public: &[u8]) -> Vec<u8> {
        let mut v = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        v.extend_from_slice(&PKCS8_ALG_AND_SEED_PREFIX);
        v.extend_from_slice(seed);
        v.extend_from_slice(&[0x81, 0x21, 0x00]);
        v.extend_from_slice(public);
        v
    }

    #[test]
    fn rfc8032_vector_1_verifies() {
        let vk = VerifyingKey::from_slice(&unhex(T1_PUBLIC)).unwrap();
        let sig = unhex(T1_SIG);
        assert!(vk.verify(b"", &sig));
        assert!(!vk.verify(b"x", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!vk.verify(b"", &bad));
        assert!(!vk.verify(b"", &sig[..63]));
    }

    #[test]
    fn rfc8032_vector_2_verifies() {
        let vk = VerifyingKey::from_slice(&unhex(T2_PUBLIC)).unwrap();
        assert!(vk.verify(&[0x72], &unhex(T2_SIG)));
        assert!(!vk.verify(&[0x73], &unhex(T2_SIG)));
    }

    #[test]
    fn rfc8032_vector_1_signs_from_pkcs8() {
        // Ed25519 is deterministic, so signing with the RFC's key reproduces its signature.
        let doc = pkcs8_v2(&unhex(T1_SECRET), &unhex(T1_PUBLIC));
        let sk = SigningKey::from_pkcs8(&doc).unwrap();
        assert_eq!(sk.public_key().to_bytes().to_vec(), unhex(T1_PUBLIC));
        assert_eq!(sk.sign(b"").to_vec(), unhex(T1_SIG));
    }

    #[test]
    fn pkcs8_with_wrong_public_key_is_refused() {
        let doc = pkcs8_v2(&unhex(T1_SECRET), &unhex(T2_PUBLIC));
        assert!(SigningKey::from_pkcs8(&doc).is_err());
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
        assert!(SigningKey::from_pkcs8(&[]).is_err());
    }

    #[test]
    fn generate_sign_verify_round_trip() {
        let (sk, pkcs8) = SigningKey::generate().unwrap();
        let vk = sk.public_key();
        let sig = sk.sign(b"checkpoint");
        assert!(vk.verify(b"checkpoint", &sig));
        assert!(!vk.verify(b"checkpoinT", &sig));

        // The stored document gives back the same key.
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(again.public_key(), vk);
        assert_eq!(again.sign(b"checkpoint"), sig);

        // Another key's signature does not verify.
        let (other, _) = SigningKey::generate().unwrap();
        assert_ne!(other.public_key(), vk);
        assert!(!other.public_key().verify(b"checkpoint", &sig));
    }

    #[test]
    fn verifying_key_bytes_round_trip() {
        let (sk, _) = SigningKey::generate().unwrap();
        let vk = sk.public_key();
        assert_eq!(VerifyingKey::from_bytes(vk.to_bytes()), vk);
        assert_eq!(VerifyingKey::from_slice(vk.as_bytes()).unwrap(), vk);
        assert!(VerifyingKey::from_slice(&[0u8; 31]).is_err());
        assert!(VerifyingKey::from_slice(&[0u8; 33]).is_err());
    }

    #[test]
    fn zeroize_wipes_seed() {
        let (mut sk, _) = SigningKey::generate().unwrap();
        assert_ne!(*sk.seed, [0u8; 32]);
        sk.zeroize();
        assert_eq!(*sk.seed, [0u8; 32]);
        // A wiped key no longer matches its public key: signing yields no valid signature.
        assert!(!sk.public_key().verify(b"m", &sk.sign(b"m")));
    }
}
