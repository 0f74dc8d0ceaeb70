//! Writes the seed corpora of the crypto fuzz targets: `cargo run --example make_seeds` (from
//! this folder). Objects are sealed with the key and context `open_object` opens with.
#![allow(clippy::unwrap_used, reason = "a one-off generator fails loudly")]

use std::path::Path;

use crypto::SecretKey;
use crypto::stream::{ObjectContext, ObjectSealer};

fn main() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let key = SecretKey::from_bytes([0x42; 32]);
    let ctx = ObjectContext {
        vendor_id: "vendor",
        model_id: "model",
        object_id: "object",
    };
    let dir = seeds.join("open_object");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, len, control) in [
        ("empty", 0usize, 0u8),
        ("small", 100, 1),
        ("small-direct", 100, 0),
    ] {
        let sealer = ObjectSealer::new(&key, &ctx).unwrap();
        let mut segment: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        sealer.seal_segment(0, true, &mut segment).unwrap();
        let mut input = vec![control];
        input.extend_from_slice(&sealer.header());
        input.extend_from_slice(&segment);
        std::fs::write(dir.join(name), input).unwrap();
    }

    let dir = seeds.join("host_csr");
    std::fs::create_dir_all(&dir).unwrap();
    let (_key, csr_pem) = crypto::host_ca::host_key_and_csr("gpu-01").unwrap();
    let mut pem = vec![0u8];
    pem.extend_from_slice(csr_pem.as_bytes());
    std::fs::write(dir.join("pem"), pem).unwrap();
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(csr_pem.as_bytes())
        .map(|d: rustls_pki_types::CertificateSigningRequestDer<'_>| d.as_ref().to_vec())
        .unwrap();
    let mut input = vec![1u8];
    input.extend_from_slice(&der);
    std::fs::write(dir.join("der"), input).unwrap();
}
