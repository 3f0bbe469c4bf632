//! Wire-format tests: golden frames, a table of bad inputs, and properties of the
//! streaming decoder (round trip, resynchronisation, corruption never accepted).

use heapless::Vec;
use node_link::{
    Block, BlockKind, DecodeError, Decoder, Environment, FaultCode, Frame, Hello, HelloAck,
    MAX_BANDS, MAX_BLOCK, MAX_WIRE, Message, NodeFault, ResetCause, Sound, Status, VERSION,
    decode_frame, encode_frame,
};
use proptest::prelude::*;

fn encode(frame: &Frame) -> std::vec::Vec<u8> {
    let mut buf = [0u8; MAX_WIRE];
    encode_frame(frame, &mut buf).unwrap().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Frames whose wire bytes are fixed: a change here is a wire-format change and needs a
/// `VERSION` bump.
fn golden() -> std::vec::Vec<(Frame, &'static str)> {
    vec![
        (
            Frame {
                counter: 0,
                message: Message::Hello(Hello {
                    protocol: 1,
                    node_id: 0x1234_5678,
                    firmware: [0, 1, 0],
                    capabilities: 0x8000_0003,
                }),
            },
            "0201010701f8acd1910102010a83808080083414e17000",
        ),
        (
            Frame {
                counter: 7,
                message: Message::Environment(Environment {
                    temperature_centi_c: 2508,
                    humidity_milli_pct: Some(45_123),
                    pressure_pa: None,
                }),
            },
            "0a010702982701c3e0020553bece2e00",
        ),
        (
            Frame {
                counter: 300,
                message: Message::Fault(NodeFault {
                    code: FaultCode::SensorBus,
                    detail: 0x76,
                }),
            },
            "0b01ac02060176e051b0c100",
        ),
    ]
}

#[test]
fn golden_frames() {
    for (frame, wire) in golden() {
        let bytes = encode(&frame);
        assert_eq!(hex(&bytes), wire, "{frame:?}");
        let mut block = bytes[..bytes.len() - 1].to_vec();
        assert_eq!(decode_frame(&mut block), Ok(frame));
    }
}

#[test]
fn bad_inputs_are_dropped_with_their_reason() {
    let good = encode(&golden()[1].0);
    let mut flipped_body = good.clone();
    flipped_body[5] ^= 0x10;
    let mut wrong_version = good.clone();
    wrong_version[1] = 9; // COBS byte 0 is a length code; byte 1 is the version
    let table: &[(&str, std::vec::Vec<u8>, DecodeError)] = &[
        ("one byte", vec![0x02, 0x41, 0x00], DecodeError::Truncated),
        (
            "cobs length past end",
            vec![0x09, 0x01, 0x02, 0x00],
            DecodeError::Cobs,
        ),
        ("bit flip in body", flipped_body, DecodeError::Crc),
        (
            "oversize",
            vec![0x55; MAX_WIRE + 3].into_iter().chain([0]).collect(),
            DecodeError::Oversize,
        ),
        (
            "valid crc, unknown message tag",
            raw_frame(&[VERSION, 0x01, 0x63]),
            DecodeError::Malformed,
        ),
        (
            "valid crc, trailing bytes after message",
            raw_frame(&[VERSION, 0x01, 0x01, 0x01, 0x00, 0xEE]),
            DecodeError::Malformed,
        ),
        (
            "valid crc, other version",
            raw_frame(&[2, 0x01, 0x01, 0x01, 0x00]),
            DecodeError::Version(2),
        ),
        ("corrupted version byte", wrong_version, DecodeError::Crc),
    ];
    for (name, bytes, want) in table {
        let mut decoder = Decoder::new();
        let mut got = vec![];
        decoder.feed(bytes, |r| got.push(r));
        assert_eq!(got, vec![Err(*want)], "{name}");
        let stats = decoder.stats();
        assert_eq!(stats.dropped, 1, "{name}");
        assert_eq!(stats.dropped_bytes as usize, bytes.len() - 1, "{name}");
    }
}

/// COBS-frames `raw` with a correct CRC: lets a test reach the checks after the CRC.
fn raw_frame(raw: &[u8]) -> std::vec::Vec<u8> {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(raw);
    let mut plain = raw.to_vec();
    plain.extend_from_slice(&crc.to_le_bytes());
    let mut out = vec![0u8; plain.len() + 8];
    let n = node_link::cobs_encode(&plain, &mut out).unwrap();
    out.truncate(n);
    out.push(0);
    out
}

#[test]
fn largest_messages_fit() {
    let frame = Frame {
        counter: u32::MAX,
        message: Message::Block(Block {
            kind: BlockKind::Features,
            rate_hz: u32::MAX,
            index: u32::MAX,
            values: Vec::from_slice(&[i16::MIN; MAX_BLOCK]).unwrap(),
        }),
    };
    let bytes = encode(&frame);
    assert!(bytes.len() <= MAX_WIRE);
    let mut decoder = Decoder::new();
    let mut got = vec![];
    decoder.feed(&bytes, |r| got.push(r));
    assert_eq!(got, vec![Ok(frame)]);
}

#[test]
fn counter_gaps_are_counted_and_reboots_are_not() {
    let mut decoder = Decoder::new();
    for counter in [5u32, 6, 9, 10, 0, 1] {
        let frame = Frame {
            counter,
            message: Message::HelloAck(HelloAck {
                protocol: 1,
                accepted: true,
            }),
        };
        decoder.feed(&encode(&frame), |r| assert!(r.is_ok()));
    }
    assert_eq!(decoder.stats().missed, 2);
    assert_eq!(decoder.stats().frames, 6);
}

fn arb_vec<const N: usize>() -> impl Strategy<Value = Vec<i16, N>> {
    prop::collection::vec(any::<i16>(), 0..=N).prop_map(|v| Vec::from_slice(&v).unwrap())
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), any::<[u8; 3]>(), any::<u32>()).prop_map(
            |(protocol, node_id, firmware, capabilities)| Message::Hello(Hello {
                protocol,
                node_id,
                firmware,
                capabilities
            })
        ),
        (any::<u8>(), any::<bool>())
            .prop_map(|(protocol, accepted)| Message::HelloAck(HelloAck { protocol, accepted })),
        (any::<i32>(), any::<Option<u32>>(), any::<Option<u32>>()).prop_map(|(t, h, p)| {
            Message::Environment(Environment {
                temperature_centi_c: t,
                humidity_milli_pct: h,
                pressure_pa: p,
            })
        }),
        (
            any::<u16>(),
            any::<i16>(),
            any::<i16>(),
            any::<u16>(),
            arb_vec::<MAX_BANDS>()
        )
            .prop_map(
                |(period_ms, laeq, lzeq, first_band_hz, bands)| Message::Sound(Sound {
                    period_ms,
                    laeq_centi_db: laeq,
                    lzeq_centi_db: lzeq,
                    first_band_hz,
                    bands_centi_db: bands
                })
            ),
        (
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            arb_vec::<MAX_BLOCK>()
        )
            .prop_map(|(pcm, rate_hz, index, values)| Message::Block(Block {
                kind: if pcm {
                    BlockKind::Pcm16
                } else {
                    BlockKind::Features
                },
                rate_hz,
                index,
                values
            })),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
            0..4u8,
            any::<Option<u8>>()
        )
            .prop_map(|(cycles, sent, errors, cause, agent_protocol)| {
                Message::Status(Status {
                    cycles,
                    frames_sent: sent,
                    sensor_errors: errors,
                    reset_cause: [
                        ResetCause::PowerOn,
                        ResetCause::Watchdog,
                        ResetCause::Software,
                        ResetCause::Unknown,
                    ][cause as usize],
                    agent_protocol,
                })
            }),
        (0..4u8, any::<u16>()).prop_map(|(code, detail)| Message::Fault(NodeFault {
            code: [
                FaultCode::SensorMissing,
                FaultCode::SensorBus,
                FaultCode::SensorData,
                FaultCode::AudioOverrun
            ][code as usize],
            detail
        })),
    ]
}

fn arb_frames() -> impl Strategy<Value = std::vec::Vec<Frame>> {
    prop::collection::vec(arb_message(), 1..12).prop_map(|messages| {
        messages
            .into_iter()
            .enumerate()
            .map(|(i, message)| Frame {
                counter: i as u32,
                message,
            })
            .collect()
    })
}

fn decode_all(bytes: &[u8], chunk: usize) -> (std::vec::Vec<Frame>, node_link::Stats) {
    let mut decoder = Decoder::new();
    let mut frames = vec![];
    for c in bytes.chunks(chunk.max(1)) {
        decoder.feed(c, |r| {
            if let Ok(f) = r {
                frames.push(f)
            }
        });
    }
    (frames, decoder.stats())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip_in_any_chunking(frames in arb_frames(), chunk in 1usize..300) {
        let bytes: std::vec::Vec<u8> = frames.iter().flat_map(encode).collect();
        let (got, stats) = decode_all(&bytes, chunk);
        prop_assert_eq!(&got, &frames);
        prop_assert_eq!(stats.dropped, 0);
        prop_assert_eq!(stats.missed, 0);
    }

    /// Garbage between frames costs only the garbage: each run ends at a delimiter and
    /// every frame after it is decoded.
    #[test]
    fn resynchronises_after_garbage(
        frames in arb_frames(),
        garbage in prop::collection::vec(prop::collection::vec(1u8..=255, 1..700), 12),
    ) {
        let mut bytes = vec![];
        for (frame, junk) in frames.iter().zip(&garbage) {
            bytes.extend_from_slice(junk);
            bytes.push(0);
            bytes.extend(encode(frame));
        }
        let (got, stats) = decode_all(&bytes, 61);
        prop_assert_eq!(&got, &frames);
        prop_assert_eq!(stats.dropped as usize, frames.len());
        let junk_bytes: usize = garbage.iter().take(frames.len()).map(|g| g.len()).sum();
        prop_assert_eq!(stats.dropped_bytes as usize, junk_bytes);
    }

    /// Flipped bits never produce a frame that was not sent, and every frame whose bytes
    /// were left alone (delimiters included) still decodes.
    #[test]
    fn corruption_is_dropped_never_accepted(
        frames in arb_frames(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
    ) {
        let encoded: std::vec::Vec<std::vec::Vec<u8>> = frames.iter().map(encode).collect();
        let mut bytes: std::vec::Vec<u8> = encoded.concat();
        let mut touched = vec![false; frames.len()];
        for (at, bit) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            // A flip touches its own frame and, through the delimiters, its neighbours.
            let mut start = 0;
            for (i, e) in encoded.iter().enumerate() {
                if at >= start && at < start + e.len() {
                    touched[i] = true;
                    if at == start + e.len() - 1 && i + 1 < frames.len() { touched[i + 1] = true; }
                    if i > 0 && bytes[at] == 0 { touched[i - 1] = true; }
                }
                start += e.len();
            }
        }
        let (got, _) = decode_all(&bytes, 17);
        for f in &got {
            prop_assert!(frames.contains(f), "accepted a frame never sent: {:?}", f);
        }
        for (i, frame) in frames.iter().enumerate() {
            if !touched[i] {
                prop_assert!(got.contains(frame), "lost untouched frame {}", i);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, stats) = decode_all(&bytes, 33);
        let delimiters = bytes.iter().filter(|&&b| b == 0).count() as u32;
        prop_assert!(stats.frames + stats.dropped <= delimiters);
    }
}
