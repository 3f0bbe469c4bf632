//! Fuzzes the streaming frame decoder: any byte stream, fed in two chunks, must not panic;
//! every frame it accepts must re-encode to a frame that decodes to itself; and the drop
//! counters must account for every delimiter-terminated frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_link::{Decoder, MAX_WIRE, decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |&b| b as usize).min(data.len());
    let mut decoder = Decoder::new();
    let mut accepted = 0u32;
    let mut results = 0u32;
    for chunk in [&data[..split], &data[split..]] {
        decoder.feed(chunk, |r| {
            results += 1;
            if let Ok(frame) = r {
                accepted += 1;
                let mut buf = [0u8; MAX_WIRE];
                let wire = encode_frame(&frame, &mut buf).expect("an accepted frame re-encodes");
                let mut block = wire[..wire.len() - 1].to_vec();
                assert_eq!(decode_frame(&mut block), Ok(frame));
            }
        });
    }
    let stats = decoder.stats();
    assert_eq!(stats.frames, accepted);
    assert_eq!(stats.frames + stats.dropped, results);
    assert!(results as usize <= data.iter().filter(|&&b| b == 0).count());
});
