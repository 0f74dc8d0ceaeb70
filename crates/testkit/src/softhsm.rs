//! A throwaway SoftHSM2 token (Debian `softhsm2`, installed by `tests/run`): a PKCS#11 HSM in
//! software, for the PKCS#11 root of trust.
//!
//! SoftHSM2 reads its configuration from `SOFTHSM2_CONF` once, when a process initialises the
//! module. A [`SoftHsm`] is a temp dir with its own configuration and token directory and one
//! token initialised by `softhsm2-util`; nothing global (`/etc/softhsm`, `/var/lib/softhsm`)
//! is touched. A server process gets it through its environment ([`SoftHsm::env`]); a test
//! that loads the module in its own process runs in a child of the test binary
//! ([`in_child_with_softhsm`]), because a process cannot safely set its own environment.

use std::path::PathBuf;
use std::process::Command;

/// Label, user PIN and security officer PIN of the token a [`SoftHsm`] initialises.
pub const SOFTHSM_TOKEN: &str = "custody-test";
pub const SOFTHSM_PIN: &str = "4711-user-pin";
const SOFTHSM_SO_PIN: &str = "4712-so-pin";
/// Set (to the SoftHSM directory) in the child that [`in_child_with_softhsm`] starts.
const CHILD_MARKER: &str = "CUSTODY_TEST_SOFTHSM_DIR";

const MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
];
const NOT_FOUND: &str = "SoftHSM2 not found (libsofthsm2.so, softhsm2-util): install the Debian \
                         package `softhsm2` (tests/run does)";

/// One SoftHSM2 configuration with one initialised token.
pub struct SoftHsm {
    dir: PathBuf,
    /// Removes the directory on drop; `None` in the child, which uses its parent's.
    _owned: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SoftHsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftHsm").field("dir", &self.dir).finish()
    }
}

impl SoftHsm {
    /// A fresh configuration and token directory, with token [`SOFTHSM_TOKEN`] initialised.
    pub fn new() -> Result<SoftHsm, String> {
        let tmp = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_owned();
        let tokens = dir.join("tokens");
        std::fs::create_dir(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        );
        std::fs::write(dir.join("softhsm2.conf"), conf).map_err(|e| format!("conf: {e}"))?;
        std::fs::write(dir.join("pin"), format!("{SOFTHSM_PIN}\n")).map_err(|e| e.to_string())?;
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
            .args(["--init-token", "--free", "--label", SOFTHSM_TOKEN])
            .args(["--pin", SOFTHSM_PIN, "--so-pin", SOFTHSM_SO_PIN])
            .output()
            .map_err(|e| format!("softhsm2-util: {e} ({NOT_FOUND})"))?;
        if !out.status.success() {
            return Err(format!(
                "softhsm2-util --init-token failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(SoftHsm {
            dir,
            _owned: Some(tmp),
        })
    }

    /// The token a parent made for this process, when [`in_child_with_softhsm`] started it.
    pub fn current() -> Option<SoftHsm> {
        std::env::var_os(CHILD_MARKER).map(|dir| SoftHsm {
            dir: PathBuf::from(dir),
            _owned: None,
        })
    }

    /// The PKCS#11 module's path.
    pub fn module() -> Result<PathBuf, String> {
        MODULES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| NOT_FOUND.to_owned())
    }

    /// The value for `SOFTHSM2_CONF`.
    pub fn conf(&self) -> PathBuf {
        self.dir.join("softhsm2.conf")
    }

    /// The token directory (one subdirectory per token, one file per object).
    pub fn token_dir(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// A file holding the user PIN (mode as created; the test's temp dir is private enough).
    pub fn pin_file(&self) -> PathBuf {
        self.dir.join("pin")
    }

    /// The environment a process using this token needs.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![(
            "SOFTHSM2_CONF".to_owned(),
            self.conf().display().to_string(),
        )]
    }

    /// A `[root]` table for this token, the PIN read from [`SoftHsm::pin_file`].
    pub fn root_toml(&self) -> Result<String, String> {
        Ok(format!(
            "[root]\nkind = \"pkcs11\"\nmodule = \"{}\"\ntoken_label = \"{SOFTHSM_TOKEN}\"\n\
             pin_file = \"{}\"\n",
            Self::module()?.display(),
            self.pin_file().display()
        ))
    }
}

/// Runs the test `test` (its full path in this test binary, e.g. `pkcs11::round_trip`) again
/// in a child process whose `SOFTHSM2_CONF` names a fresh [`SoftHsm`], and waits for it.
///
/// Returns `Ok(None)` in the parent once the child passed (its output is printed), an error
/// when it failed; in the child, `Ok(Some(hsm))`: the test body runs there.
pub fn in_child_with_softhsm(test: &str) -> Result<Option<SoftHsm>, String> {
    if let Some(hsm) = SoftHsm::current() {
        return Ok(Some(hsm));
    }
    let hsm = SoftHsm::new()?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .envs(hsm.env())
        .env(CHILD_MARKER, &hsm.dir)
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    // The child must have run exactly this test: a filter that matched nothing passes too.
    if !out.status.success() || !stdout.contains("1 passed") {
        return Err(format!(
            "{test} failed in its SoftHSM child process ({})",
            out.status
        ));
    }
    Ok(None)
}
