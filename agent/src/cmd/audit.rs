//! `edge-agent audit verify|show`: a device's log verified, and listed for a person.

use std::path::Path;
use std::process::ExitCode;

use aggregate::RecordView;
use anyhow::{Context, Result};

use crate::EXIT_MISMATCH;

/// Verifies a log; with `show`, also lists its records (`Some(true)`: as JSON lines).
pub fn audit_verify(dir: &Path, pubkey: &Path, show: Option<bool>) -> Result<ExitCode> {
    let key = audit::keys::load_verifier(pubkey)?;
    let mut content_problem: Option<String> = None;
    let mut contents = verify::Contents::new();
    let mut rows = Vec::new();
    let report = audit::verify_dir_with(dir, &key, &mut |seq, entry| {
        if content_problem.is_some() {
            return;
        }
        match contents.check(seq, entry) {
            Err(e) => content_problem = Some(e.to_string()),
            Ok(r) => match show {
                Some(true) => rows.push(String::from_utf8_lossy(entry).into_owned()),
                Some(false) => rows.push(show_record(&r)),
                None => {}
            },
        }
    })
    .with_context(|| format!("reading {}", dir.display()))?;
    if show == Some(false) {
        say!(
            "{:>6}  {:<24} {:<8} {:<28} aggregates",
            "seq",
            "window start",
            "length",
            "model"
        );
    }
    for r in rows {
        say!("{r}");
    }
    say!("{report}");
    if let Some(o) = &report.origin
        && let Err(e) = contents.check_origin(o)
    {
        content_problem.get_or_insert_with(|| e.to_string());
    }
    if let Some(p) = &content_problem {
        say!("record contents: {p}");
    }
    if report.is_ok() && content_problem.is_none() {
        say!("audit verify: OK");
        Ok(ExitCode::SUCCESS)
    } else {
        say!("audit verify: FAILED");
        Ok(ExitCode::from(EXIT_MISMATCH))
    }
}

/// One line for a person: the window and its aggregates, suppressed counts as "<k".
fn show_record(r: &RecordView) -> String {
    use aggregate::Published;
    let k = r.privacy.k;
    let p = |v: &Published| match v {
        Published::Value(v) => v.to_string(),
        Published::Suppressed => format!("<{k}"),
    };
    let pct = |ppm: u64| format!("{:.1}%", ppm as f64 / 1e4);
    let mut parts = Vec::new();
    for (c, v) in &r.aggregates.count {
        parts.push(format!(
            "{c}: max {} total {} in {} frames",
            p(&v.max),
            p(&v.total),
            v.frames
        ));
    }
    for (c, v) in &r.aggregates.presence_share {
        let share = match v.share_ppm {
            Published::Value(s) => pct(s),
            Published::Suppressed => format!("<{k} frames"),
        };
        parts.push(format!("{c} present {share}"));
    }
    for (f, v) in r
        .aggregates
        .speech_share
        .iter()
        .chain(&r.aggregates.class_share)
    {
        parts.push(format!(
            "{f} {} of {:.1} s",
            pct(v.share_ppm),
            v.observed_ms as f64 / 1e3
        ));
    }
    for (n, v) in &r.aggregates.level_stats {
        let m = |x: Option<i64>| x.map_or("-".into(), |x| format!("{:.1}", x as f64 / 1e3));
        parts.push(format!(
            "{n}: min {} mean {} max {} p90 {}",
            m(v.min_milli),
            m(v.mean_milli),
            m(v.max_milli),
            m(v.p90_milli)
        ));
    }
    for (line, per_class) in &r.aggregates.line_count {
        let classes: Vec<String> = per_class
            .iter()
            .map(|(c, v)| format!("{c} in {} out {}", p(&v.inward), p(&v.outward)))
            .collect();
        parts.push(format!("line {line}: {}", classes.join(", ")));
    }
    let withheld = r.privacy.budget.as_ref().is_some_and(|b| b.withheld);
    if parts.is_empty() {
        parts.push(if withheld {
            "withheld: the day's privacy budget is spent".into()
        } else {
            "nothing observed".into()
        });
    }
    let mut flags = String::new();
    if r.window.partial {
        flags.push_str(" [partial]");
    }
    if r.window.clock_jumps > 0 {
        flags.push_str(&format!(" [clock jump {:+} ms]", r.window.clock_jump_ms));
    }
    if let Some(e) = r.privacy.record_epsilon_milli() {
        let dec = aggregate::privacy::decimal;
        flags.push_str(&format!(" [eps {}", dec(e)));
        if let Some(b) = &r.privacy.budget {
            flags.push_str(&format!(
                ", day {}: {} of {}",
                b.day,
                dec(b.spent_milli),
                dec(b.epsilon_milli)
            ));
        }
        flags.push(']');
    }
    format!(
        "{:>6}  {:<24} {:<8} {:<28} {}{flags}",
        r.seq,
        r.window.start,
        format!("{}s", r.window.length_ms / 1000),
        format!("{} {}", r.model.id, r.model.version),
        parts.join("; ")
    )
}
