//! Arbitrary bytes from a peer must never panic the wire decoder, and whatever
//! it accepts must survive an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tillswarm_protocol::wire;

fuzz_target!(|data: &[u8]| {
    // The bytes as one unframed message.
    if let Ok(msg) = wire::decode(data) {
        assert!(
            data.len() <= wire::MAX_FRAME,
            "decode accepted {} bytes, more than MAX_FRAME",
            data.len()
        );
        let encoded = wire::encode(&msg);
        let again = wire::decode(&encoded).expect("re-encoded message must decode");
        assert_eq!(again, msg, "decode(encode(msg)) != msg");
    }

    // The same bytes as a length-prefixed stream: read frames until one fails.
    let mut reader = data;
    while let Ok(msg) = wire::read_frame(&mut reader) {
        let encoded = wire::encode(&msg);
        assert!(encoded.len() <= wire::MAX_FRAME);
        let again = wire::decode(&encoded).expect("re-encoded frame must decode");
        assert_eq!(again, msg, "decode(encode(read_frame)) != msg");
    }
});
