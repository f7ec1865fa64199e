//! Arbitrary frames, listed under arbitrary lengths, must never panic the
//! chunk decoder nor make it allocate past the listed length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tillswarm_protocol::ChunkHash;
use tillswarm_protocol::chunk_codec::Decoder;
use tillswarm_protocol::manifest::ChunkRef;

fuzz_target!(|data: &[u8]| {
    let Some((head, wire)) = data.split_first_chunk::<4>() else {
        return;
    };
    // The listed content length: up to 512 KiB (chunker V2's maximum).
    let length = u32::from_le_bytes(*head) % (512 * 1024) + 1;
    let chunk = ChunkRef {
        hash: ChunkHash::of(wire),
        length,
        zstd_len: wire.len() as u32,
    };
    let mut decoder = Decoder::new().expect("decoder");
    let mut out = Vec::new();
    let _ = decoder.decode(&chunk, true, wire, &mut out);
    assert!(out.capacity() <= (length as usize).max(wire.len()) * 2 + 64);
});
