//! SIGKILL at random (seeded) points of a child appending in a loop: after each kill the log
//! opens, verifies, and holds every record the child reported as appended.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use audit::{Log, SignerKey, verify_dir};

/// splitmix64: a small seeded generator, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[test]
fn killed_appender_loses_nothing_it_reported() {
    const ORIGIN: &str = "iat.example/kill-test";
    let key = SignerKey::from_seed(ORIGIN, &[9; 32]).unwrap();
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x1a7_2024);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut max_reported: Option<u64> = None;
    let rounds = 8;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_audit-append-loop"))
            .arg(d.path())
            .arg("100000")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.parse::<u64>().unwrap()).is_err() {
                    break;
                }
            }
        });
        // Kill after a random number of reported appends, plus a random delay so the kill
        // lands anywhere inside an append, a checkpoint or an ack.
        let target = 5 + rng.next() % 120;
        let mut seen = 0;
        while seen < target {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(seq) => {
                    max_reported = Some(max_reported.map_or(seq, |m| m.max(seq)));
                    seen += 1;
                }
                Err(e) => panic!("round {round}: the child stopped reporting: {e}"),
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 3000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        while let Ok(seq) = rx.try_recv() {
            max_reported = Some(max_reported.map_or(seq, |m| m.max(seq)));
        }

        let log = Log::open(
            d.path(),
            ORIGIN,
            &key,
            audit::Options {
                segment_max_bytes: 2048,
                ..Default::default()
            },
        )
        .unwrap_or_else(|e| panic!("round {round}: reopen failed: {e}"));
        let max = max_reported.unwrap();
        assert!(
            log.size() > max,
            "round {round}: seq {max} was reported but the log has {}",
            log.size()
        );
        for r in log.read(log.first_seq()).unwrap() {
            let r = r.unwrap();
            let want = format!(
                "{{\"seq\":{},\"pad\":\"{}\"}}",
                r.seq,
                "x".repeat((r.seq % 97) as usize)
            );
            assert_eq!(r.entry, want.as_bytes(), "round {round}: seq {}", r.seq);
        }
        drop(log);
        let report = verify_dir(d.path(), &key.verifier()).unwrap();
        assert!(report.is_ok(), "round {round}: {report}");
        println!("round {round}: killed after {target} reports; {report}");
        if Instant::now() > deadline {
            println!("time bound reached after {} rounds", round + 1);
            break;
        }
    }
}
