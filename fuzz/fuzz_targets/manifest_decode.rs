//! Arbitrary bytes must never panic the signed-manifest parser or verifier.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use tillswarm_protocol::manifest::{PublicKey, SecretKey, SignedManifest};

/// A fixed coordinator key; fuzz input cannot forge its signatures, so this
/// exercises parsing, signature decoding and rejection paths.
static KEY: LazyLock<PublicKey> = LazyLock::new(|| SecretKey::from_seed([7u8; 32]).public());

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = SignedManifest::from_bytes(data) {
        let _ = signed.verify(&KEY);
    }
});
