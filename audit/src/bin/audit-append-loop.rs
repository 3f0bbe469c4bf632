//! Test helper for the SIGKILL test: appends records to a log in a loop and prints each seq on
//! stdout once `append` has returned (so it is durable), plus checkpoints and acks.
//!
//! Usage: `audit-append-loop <dir> <records>`. The key is a fixed test key; entries are
//! `{"seq":N,"pad":"xx.."}` so the test can check their content.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use audit::{Log, Options, SignerKey};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(Ok(records))) = (args.get(1), args.get(2).map(|n| n.parse::<u64>()))
    else {
        eprintln!("usage: audit-append-loop <dir> <records>");
        return ExitCode::from(2);
    };
    match run(&PathBuf::from(dir), records) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit-append-loop: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(dir: &std::path::Path, records: u64) -> Result<(), audit::StoreError> {
    let key = SignerKey::from_seed("iat.example/kill-test", &[9; 32]).expect("valid name");
    let opts = Options {
        segment_max_bytes: 2048,
        ..Options::default()
    };
    let mut log = Log::open(dir, "iat.example/kill-test", &key, opts)?;
    let mut out = std::io::stdout().lock();
    for _ in 0..records {
        let seq = log.size();
        let entry = format!(
            "{{\"seq\":{seq},\"pad\":\"{}\"}}",
            "x".repeat((seq % 97) as usize)
        );
        let got = log.append(entry.as_bytes())?;
        assert_eq!(got, seq);
        let _ = writeln!(out, "{seq}").and_then(|_| out.flush());
        if seq % 7 == 6 {
            log.checkpoint()?;
        }
        if seq % 25 == 24 {
            log.ack(seq - 10)?;
        }
    }
    Ok(())
}
