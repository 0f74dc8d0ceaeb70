//! A PKCS#11 token (an HSM, a cloud HSM, SoftHSM2) as the root of trust: one AES key on the
//! token per epoch, which never leaves it.
//!
//! * Creating epoch N's root is C_GenerateKey (AES-256) on the token with `CKA_TOKEN`,
//!   `CKA_PRIVATE`, `CKA_SENSITIVE`, not `CKA_EXTRACTABLE`, not `CKA_COPYABLE` (a copy would
//!   outlive the shred), usable only to encrypt and decrypt, labelled `custody-root-N-ATTEMPT`.
//!   The token's own account of the new key is checked (sensitive, never extractable, not
//!   copyable): a token that ignored the template loses that key at once and refuses the
//!   epoch. The label is the root's name in the epoch ledger.
//! * The epoch key is made locally and sealed on the token with CKM_AES_GCM (C_Encrypt), the
//!   epoch number in the associated data, so a blob cannot pass for another epoch's. The IV
//!   comes from the token's generator and is read back after the call (a token that picks its
//!   own IV writes it into the same buffer). Stored as `VERSION || IV (12) || ciphertext+tag`.
//! * Destroying is C_DestroyObject of every key with the root's label; the post-check asks
//!   the token (C_FindObjects) whether any key with that label is left.
//! * The PIN comes from a file or an environment variable, is held as a `secrecy` string
//!   (wiped on drop), and is never logged or put in an error. A wrong PIN stops the start.
//! * PKCS#11 calls block; they run on tokio's blocking pool. One session, logged in at start,
//!   is shared under a lock; a session the token dropped (HSM restart, network HSM failover)
//!   is reopened and logged in again once.
//! * A module is loaded and C_Initialize'd once per process and never finalized: PKCS#11
//!   allows one initialisation per process, and several providers (tests, a restart of the
//!   hierarchy) may use the same module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use crypto::SecretKey;
use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::root::valid_attempt;
use crate::{KeyError, RootDestruction, RootKind, RootProvider, RootRef, RootStatus, epoch_aad};

/// Version of a wrapped epoch key under a PKCS#11 root. Frozen.
const WRAP_VERSION: u8 = 1;
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;
/// Domain of the associated data (then `epoch_aad`): this blob is a PKCS#11 root's. Frozen.
const AAD_DOMAIN: &[u8] = b"custody/pkcs11-root/v1\0";

/// `[root]` with `kind = "pkcs11"`.
///
/// ```toml
/// [root]
/// kind = "pkcs11"
/// module = "/usr/lib/softhsm/libsofthsm2.so"   # the vendor's PKCS#11 library
/// token_label = "custody"                      # or: slot = 0
/// pin_file = "/etc/custody/hsm-pin"            # or: pin_env = "CUSTODY_HSM_PIN"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library) of the HSM.
    pub module: PathBuf,
    /// The token's label; exactly one of `token_label` and `slot`.
    #[serde(default)]
    pub token_label: Option<String>,
    /// The slot id; exactly one of `token_label` and `slot`.
    #[serde(default)]
    pub slot: Option<u64>,
    /// A file holding the user PIN (one trailing newline is ignored); exactly one of
    /// `pin_file` and `pin_env`.
    #[serde(default)]
    pub pin_file: Option<PathBuf>,
    /// The name of an environment variable holding the user PIN.
    #[serde(default)]
    pub pin_env: Option<String>,
}

/// One token, one AES key per epoch.
pub struct Pkcs11Root {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Pkcs11,
    slot: Slot,
    /// For messages: `token "LABEL" (slot N) through MODULE`.
    place: String,
    pin: AuthPin,
    /// The logged-in session; `None` after the token dropped it.
    session: Mutex<Option<Session>>,
}

/// `C_Function: CKR_NAME` without the library's long explanations.
fn describe(err: &CkError) -> String {
    match err {
        CkError::Pkcs11(rv, function) => format!("C_{function:?}: {rv:?}"),
        other => other.to_string(),
    }
}

fn provider(context: &str, err: &CkError) -> KeyError {
    KeyError::Provider(format!("PKCS#11 {context}: {}", describe(err)))
}

/// The process-wide context of `module`, loaded and initialised on first use.
fn context(module: &Path) -> Result<Pkcs11, KeyError> {
    static CONTEXTS: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let contexts = CONTEXTS.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut contexts = contexts
        .lock()
        .map_err(|_| KeyError::Provider("PKCS#11 module table poisoned".into()))?;
    if let Some(ctx) = contexts.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        KeyError::Provider(format!(
            "cannot load the PKCS#11 module {}: {}",
            module.display(),
            describe(&e)
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(provider(&format!("module {}", module.display()), &e)),
    }
    contexts.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn read_pin(config: &Pkcs11Config) -> Result<AuthPin, KeyError> {
    let pin = match (&config.pin_file, &config.pin_env) {
        (Some(path), None) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                KeyError::Provider(format!(
                    "cannot read the PKCS#11 PIN file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?);
            let pin = text
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&text);
            Zeroizing::new(pin.to_owned())
        }
        (None, Some(name)) => Zeroizing::new(std::env::var(name).map_err(|_| {
            KeyError::Provider(format!(
                "the PKCS#11 PIN variable {name} is not set (or not UTF-8)"
            ))
        })?),
        _ => {
            return Err(KeyError::Provider(
                "pkcs11 configuration needs exactly one of pin_file and pin_env".into(),
            ));
        }
    };
    if pin.is_empty() {
        return Err(KeyError::Provider("the PKCS#11 PIN is empty".into()));
    }
    Ok(AuthPin::from(pin.as_str()))
}

/// The slot named by the configuration, and its token's label.
fn find_slot(ctx: &Pkcs11, config: &Pkcs11Config) -> Result<(Slot, String), KeyError> {
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| provider("listing slots", &e))?;
    let label_of = |slot: Slot| {
        ctx.get_token_info(slot)
            .map(|info| info.label().trim_end().to_owned())
            .map_err(|e| provider("reading token information", &e))
    };
    match (&config.token_label, config.slot) {
        (Some(label), None) => {
            let mut found = Vec::new();
            for slot in slots {
                if label_of(slot)? == *label {
                    found.push(slot);
                }
            }
            match found.as_slice() {
                [slot] => Ok((*slot, label.clone())),
                [] => Err(KeyError::Provider(format!(
                    "no initialised PKCS#11 token labelled {label:?} in {}",
                    config.module.display()
                ))),
                _ => Err(KeyError::Provider(format!(
                    "several PKCS#11 tokens are labelled {label:?}: set slot instead"
                ))),
            }
        }
        (None, Some(id)) => {
            let slot = slots.into_iter().find(|s| s.id() == id).ok_or_else(|| {
                KeyError::Provider(format!(
                    "PKCS#11 slot {id} has no initialised token in {}",
                    config.module.display()
                ))
            })?;
            Ok((slot, label_of(slot)?))
        }
        _ => Err(KeyError::Provider(
            "pkcs11 configuration needs exactly one of token_label and slot".into(),
        )),
    }
}

impl Inner {
    fn open_session(&self) -> Result<Session, KeyError> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| provider(&format!("opening a session on {}", self.place), &e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => Err(KeyError::Provider(format!(
                "the PKCS#11 {} refused the PIN: it is incorrect (check pin_file or pin_env)",
                self.place
            ))),
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(KeyError::Provider(format!(
                "the PKCS#11 {} has locked the user PIN after failed logins: its security \
                 officer must unlock it",
                self.place
            ))),
            Err(e) => Err(provider(&format!("login to {}", self.place), &e)),
        }
    }

    /// Runs `op` on the logged-in session; a session the token no longer knows is reopened
    /// (and logged in) once.
    fn with_session<T>(
        &self,
        op: impl Fn(&Session) -> Result<T, CkError>,
    ) -> Result<Result<T, CkError>, KeyError> {
        let mut guard = self
            .session
            .lock()
            .map_err(|_| KeyError::Provider("PKCS#11 session lock poisoned".into()))?;
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.open_session()?);
            }
            let Some(session) = guard.as_ref() else {
                continue;
            };
            match op(session) {
                Err(CkError::Pkcs11(
                    RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent,
                    _,
                )) if attempt == 0 => *guard = None,
                result => return Ok(result),
            }
        }
        Err(KeyError::Provider(format!(
            "PKCS#11 {}: the session was lost twice",
            self.place
        )))
    }

    /// Every secret key labelled `label` on the token. Asked only of a session logged in as the
    /// user: a session that lost its login sees no private object, and an empty answer from it
    /// would pass for "destroyed".
    fn find(&self, label: &str) -> Result<Vec<ObjectHandle>, KeyError> {
        self.with_session(|s| {
            if s.get_session_info()?.session_state() != SessionState::RwUser {
                return Err(CkError::Pkcs11(
                    RvError::UserNotLoggedIn,
                    Function::FindObjectsInit,
                ));
            }
            s.find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
        })?
        .map_err(|e| provider(&format!("looking for key {label} on {}", self.place), &e))
    }

    /// The one key labelled `label`, or `None`. Several are refused: this code makes one per
    /// label, so another is a plant.
    fn find_one(&self, label: &str) -> Result<Option<ObjectHandle>, KeyError> {
        match self.find(label)?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            many => Err(KeyError::Provider(format!(
                "{} keys are labelled {label} on {}: refusing to guess which is the root",
                many.len(),
                self.place
            ))),
        }
    }

    fn create(&self, label: &str) -> Result<(), KeyError> {
        if !self.find(label)?.is_empty() {
            return Err(KeyError::RootExists(format!("{label} on {}", self.place)));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen((crypto::KEY_LEN as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Copyable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(label.as_bytes().to_vec()),
        ];
        let key = self
            .with_session(|s| s.generate_key(&Mechanism::AesKeyGen, &template))?
            .map_err(|e| provider(&format!("generating key {label} on {}", self.place), &e))?;
        // Trust the token's account of the key, not the template it was given.
        let protected = self
            .with_session(|s| {
                s.get_attributes(
                    key,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::NeverExtractable,
                        AttributeType::Extractable,
                        AttributeType::Copyable,
                    ],
                )
            })?
            .map(|attributes| {
                let has = |wanted: &Attribute| attributes.contains(wanted);
                has(&Attribute::Sensitive(true))
                    && has(&Attribute::NeverExtractable(true))
                    && has(&Attribute::Extractable(false))
                    && !has(&Attribute::Copyable(true))
            })
            .unwrap_or(false);
        if !protected {
            let _ = self.with_session(|s| s.destroy_object(key));
            return Err(KeyError::Provider(format!(
                "the PKCS#11 {} made key {label} extractable or copyable despite the template: \
                 refusing it as a root of trust",
                self.place
            )));
        }
        Ok(())
    }

    fn wrap(&self, label: &str, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        let handle = self.find_one(label)?.ok_or_else(|| KeyError::RootGone {
            epoch,
            root: label.to_owned(),
        })?;
        let aad = aad(epoch);
        let (iv, sealed) = self
            .with_session(|s| {
                let mut iv = [0u8; IV_LEN];
                s.generate_random_slice(&mut iv)?;
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
                let sealed = s.encrypt(&Mechanism::AesGcm(params), handle, key.expose_secret())?;
                Ok((iv, sealed))
            })?
            .map_err(|e| provider(&format!("sealing epoch {epoch}'s key under {label}"), &e))?;
        let mut out = Vec::with_capacity(1 + IV_LEN + sealed.len());
        out.push(WRAP_VERSION);
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, label: &str, epoch: u64, wrapped: &[u8]) -> Result<SecretKey, KeyError> {
        let (version, rest) = wrapped
            .split_first()
            .ok_or_else(|| KeyError::Provider("empty wrapped epoch key".into()))?;
        if *version != WRAP_VERSION || rest.len() <= IV_LEN {
            return Err(KeyError::Provider(format!(
                "epoch {epoch}'s wrapped key is not a PKCS#11 root's (version {version})"
            )));
        }
        let (iv, sealed) = rest.split_at(IV_LEN);
        let handle = self.find_one(label)?.ok_or_else(|| KeyError::RootGone {
            epoch,
            root: label.to_owned(),
        })?;
        let aad = aad(epoch);
        let plain = self
            .with_session(|s| {
                let mut iv = <[u8; IV_LEN]>::try_from(iv).map_err(CkError::TryFromSlice)?;
                let params = GcmParams::new(&mut iv, &aad, TAG_BITS.into())?;
                s.decrypt(&Mechanism::AesGcm(params), handle, sealed)
                    .map(Zeroizing::new)
            })?
            .map_err(|e| match e {
                // A root that exists but does not open the blob is the wrong root or damage,
                // never "gone".
                CkError::Pkcs11(RvError::EncryptedDataInvalid, _) => KeyError::Provider(format!(
                    "HSM key {label} does not open epoch {epoch}'s key: wrong token or damage"
                )),
                other => provider(
                    &format!("opening epoch {epoch}'s key under {label}"),
                    &other,
                ),
            })?;
        Ok(SecretKey::from_slice(&plain)?)
    }

    /// Destroys every key labelled `label`; false when there was none.
    fn destroy(&self, label: &str) -> Result<bool, KeyError> {
        let keys = self.find(label)?;
        for key in &keys {
            match self.with_session(|s| s.destroy_object(*key))? {
                // Gone between the search and now: what was wanted.
                Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => {}
                Err(e) => {
                    return Err(provider(
                        &format!("destroying key {label} on {}", self.place),
                        &e,
                    ));
                }
            }
        }
        Ok(!keys.is_empty())
    }
}

fn aad(epoch: u64) -> Vec<u8> {
    let mut aad = AAD_DOMAIN.to_vec();
    aad.extend_from_slice(&epoch_aad(epoch));
    aad
}

/// The label of attempt `attempt`'s root for `epoch`.
fn label(epoch: u64, attempt: &str) -> Result<String, KeyError> {
    if !valid_attempt(attempt) {
        return Err(KeyError::Provider(format!(
            "invalid creation attempt id {attempt:?}"
        )));
    }
    Ok(format!("custody-root-{epoch}-{attempt}"))
}

/// `root`'s label, which must name one of `epoch`'s roots.
fn label_of(root: &RootRef, epoch: u64) -> Result<String, KeyError> {
    let name = root.as_str();
    let ours = name
        .strip_prefix(&format!("custody-root-{epoch}-"))
        .is_some_and(valid_attempt);
    if !ours {
        return Err(KeyError::Provider(format!(
            "root name {root} does not belong to epoch {epoch}"
        )));
    }
    Ok(name.to_owned())
}

impl Pkcs11Root {
    /// Loads the module, finds the token and logs in: a wrong PIN, module or token stops
    /// here, before anything else is opened.
    pub async fn connect(config: &Pkcs11Config) -> Result<Pkcs11Root, KeyError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Self::connect_blocking(&config))
            .await
            .map_err(|e| KeyError::Provider(format!("PKCS#11 start: {e}")))?
    }

    fn connect_blocking(config: &Pkcs11Config) -> Result<Pkcs11Root, KeyError> {
        let pin = read_pin(config)?;
        let ctx = context(&config.module)?;
        let (slot, token) = find_slot(&ctx, config)?;
        let inner = Inner {
            ctx,
            slot,
            place: format!(
                "token {token:?} (slot {}) through {}",
                slot.id(),
                config.module.display()
            ),
            pin,
            session: Mutex::new(None),
        };
        let session = inner.open_session()?;
        *inner
            .session
            .lock()
            .map_err(|_| KeyError::Provider("PKCS#11 session lock poisoned".into()))? =
            Some(session);
        Ok(Pkcs11Root {
            inner: Arc::new(inner),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Inner) -> Result<T, KeyError> + Send + 'static,
    ) -> Result<T, KeyError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || op(&inner))
            .await
            .map_err(|e| KeyError::Provider(format!("PKCS#11 call: {e}")))?
    }
}

#[async_trait]
impl RootProvider for Pkcs11Root {
    fn kind(&self) -> RootKind {
        RootKind::Pkcs11
    }

    fn describe(&self) -> String {
        format!("PKCS#11 {}", self.inner.place)
    }

    async fn create_root(&self, epoch: u64, attempt: &str) -> Result<RootRef, KeyError> {
        let label = label(epoch, attempt)?;
        let root =
            RootRef::new(&label).ok_or_else(|| KeyError::Provider("invalid root label".into()))?;
        self.run(move |inner| inner.create(&label)).await?;
        Ok(root)
    }

    async fn wrap(&self, root: &RootRef, epoch: u64, key: &SecretKey) -> Result<Vec<u8>, KeyError> {
        let label = label_of(root, epoch)?;
        let key = SecretKey::from_slice(key.expose_secret())?;
        self.run(move |inner| inner.wrap(&label, epoch, &key)).await
    }

    async fn unwrap(
        &self,
        root: &RootRef,
        epoch: u64,
        wrapped: &[u8],
    ) -> Result<SecretKey, KeyError> {
        let label = label_of(root, epoch)?;
        let wrapped = wrapped.to_vec();
        self.run(move |inner| inner.unwrap(&label, epoch, &wrapped))
            .await
    }

    async fn destroy_root(&self, root: &RootRef, epoch: u64) -> Result<RootDestruction, KeyError> {
        let label = label_of(root, epoch)?;
        Ok(if self.run(move |inner| inner.destroy(&label)).await? {
            RootDestruction::HsmKeyDestroyed
        } else {
            RootDestruction::AlreadyGone
        })
    }

    async fn root_status(&self, root: &RootRef, epoch: u64) -> Result<RootStatus, KeyError> {
        let label = label_of(root, epoch)?;
        let place = self.inner.place.clone();
        let found = self
            .run({
                let label = label.clone();
                move |inner| inner.find(&label)
            })
            .await?;
        Ok(if found.is_empty() {
            RootStatus::Gone {
                deletion_date: None,
            }
        } else {
            RootStatus::Present(format!("HSM key {label} is still on {place}"))
        })
    }

    async fn destroy_unrecorded(&self, epoch: u64, attempt: &str) -> Result<(), KeyError> {
        // Unlike a KMS key, a half-made HSM key can be found: by its attempt's label.
        let label = label(epoch, attempt)?;
        self.run(move |inner| inner.destroy(&label)).await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn labels_belong_to_their_epoch() {
        assert_eq!(label(3, "0123abcd").unwrap(), "custody-root-3-0123abcd");
        assert!(label(3, "../x").is_err());
        let ours = RootRef::new("custody-root-3-0123abcd").unwrap();
        assert!(label_of(&ours, 3).is_ok());
        assert!(label_of(&ours, 4).is_err());
        for other in [
            "custody-root-3-",
            "custody-root-3-XYZ12345",
            "root-3-0123abcd.key",
        ] {
            assert!(
                label_of(&RootRef::new(other).unwrap(), 3).is_err(),
                "{other}"
            );
        }
    }

    #[test]
    fn the_pin_comes_from_exactly_one_place_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pin");
        std::fs::write(&file, "s3cret-pin\n").unwrap();
        let config = |pin_file: Option<PathBuf>, pin_env: Option<String>| Pkcs11Config {
            module: PathBuf::from("/nonexistent.so"),
            token_label: Some("t".into()),
            slot: None,
            pin_file,
            pin_env,
        };
        use secrecy::ExposeSecret;
        let pin = read_pin(&config(Some(file.clone()), None)).unwrap();
        assert_eq!(pin.expose_secret(), "s3cret-pin");
        assert!(read_pin(&config(None, None)).is_err());
        assert!(read_pin(&config(Some(file.clone()), Some("X".into()))).is_err());
        assert!(read_pin(&config(None, Some("CUSTODY_NO_SUCH_PIN_VARIABLE".into()))).is_err());
        std::fs::write(&file, "\n").unwrap();
        assert!(read_pin(&config(Some(file), None)).is_err());
        let shown = format!("{:?}", config(None, Some("CUSTODY_HSM_PIN".into())));
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
