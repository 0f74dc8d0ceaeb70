//! The only IO in this crate: reading the policy directory.
//!
//! `dir/schema.cedarschema` is the schema; every `dir/*.cedar` file (sorted by name) holds
//! policies. Nothing else in the crate touches the file system.

use std::path::Path;

use crate::engine::PolicyEngine;
use crate::error::PolicyError;

/// The schema's file name inside a policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// What a valid policy directory holds (for `custody policy validate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Policy files read, in order.
    pub files: Vec<String>,
    /// Policy ids, in file order.
    pub policies: Vec<&'static str>,
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|e| PolicyError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Read `dir`: the schema text and `(file name, text)` of each policy file.
pub fn read_dir(dir: &Path) -> Result<(String, Vec<(String, String)>), PolicyError> {
    let schema_path = dir.join(SCHEMA_FILE);
    if !schema_path.is_file() {
        return Err(PolicyError::MissingSchema(
            schema_path.display().to_string(),
        ));
    }
    let schema = read(&schema_path)?;
    let io = |e: std::io::Error| PolicyError::Io {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
            names.push(path);
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(PolicyError::NoPolicies(dir.display().to_string()));
    }
    let mut files = Vec::with_capacity(names.len());
    for path in names {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.push((name, read(&path)?));
    }
    Ok((schema, files))
}

impl PolicyEngine {
    /// Load and strictly validate the policy directory (the server calls this at start).
    pub fn load(dir: impl AsRef<Path>) -> Result<PolicyEngine, PolicyError> {
        let (schema, files) = read_dir(dir.as_ref())?;
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        PolicyEngine::from_files(&schema, &files)
    }
}

/// Validate the policy directory without keeping the engine (`custody policy validate`).
pub fn validate(dir: impl AsRef<Path>) -> Result<Summary, PolicyError> {
    let (schema, files) = read_dir(dir.as_ref())?;
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let engine = PolicyEngine::from_files(&schema, &refs)?;
    Ok(Summary {
        files: files.into_iter().map(|(n, _)| n).collect(),
        policies: engine.policy_ids(),
    })
}
