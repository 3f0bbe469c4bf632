//! Decode throughput on the host: a node's typical stream (environment, sound, PCM and
//! feature blocks, status), fed to the streaming decoder in serial-sized chunks.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use heapless::Vec;
use node_link::{
    Block, BlockKind, Decoder, Environment, Frame, MAX_WIRE, Message, ResetCause, Sound, Status,
    encode_frame,
};

fn stream(frames: u32) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::new();
    let mut buf = [0u8; MAX_WIRE];
    for counter in 0..frames {
        let message = match counter % 4 {
            0 => Message::Environment(Environment {
                temperature_centi_c: 2150 + counter as i32 % 100,
                humidity_milli_pct: Some(45_000),
                pressure_pa: Some(101_325),
            }),
            1 => Message::Sound(Sound {
                period_ms: 125,
                laeq_centi_db: 5_500,
                lzeq_centi_db: 6_100,
                first_band_hz: 125,
                bands_centi_db: Vec::from_slice(&[4000, 4500, 5000, 5200, 4800, 4100]).unwrap(),
            }),
            2 => Message::Block(Block {
                kind: BlockKind::Pcm16,
                rate_hz: 16_000,
                index: counter * 128,
                values: (0..128)
                    .map(|i| ((i * 977) % 20_000) as i16 - 10_000)
                    .collect(),
            }),
            _ => Message::Status(Status {
                cycles: counter,
                frames_sent: counter,
                sensor_errors: 0,
                reset_cause: ResetCause::PowerOn,
                agent_protocol: Some(1),
            }),
        };
        let bytes = encode_frame(&Frame { counter, message }, &mut buf).unwrap();
        out.extend_from_slice(bytes);
    }
    out
}

fn decode(c: &mut Criterion) {
    let bytes = stream(4_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("mixed stream, 64-byte chunks", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new();
            let mut ok = 0u32;
            for chunk in bytes.chunks(64) {
                decoder.feed(chunk, |r| ok += r.is_ok() as u32);
            }
            assert_eq!(ok, 4_000);
            ok
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
