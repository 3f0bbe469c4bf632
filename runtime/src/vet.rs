//! Preparing an untrusted model in a child process with memory and time limits.
//!
//! The loader guards the ONNX file and turns a panic inside tract into an error, but a model
//! can also make tract allocate without bound or run for a very long time, which no
//! `catch_unwind` stops: in the agent's process that is an out-of-memory kill or a hang, and
//! under systemd a restart loop. [`vet`] runs the whole preparation (hash, guard, parse,
//! optimise, plan, and one inference on the card's initial inputs) in a child process of this
//! same binary (`edge-agent model vet-child`) under `RLIMIT_DATA` and `RLIMIT_CPU`, with a
//! wall-clock deadline, and reports how the child ended. `selftest` (the health check of
//! `cargo xtask flash --host`) vets every pipeline's model before a release is switched to.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The limits a model's preparation runs under.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Heap and private mappings of the child (`RLIMIT_DATA`), MiB.
    pub memory_mib: u64,
    /// CPU time (`RLIMIT_CPU`) and, doubled, wall-clock time.
    pub seconds: f64,
}

impl Default for Limits {
    /// Far above what the reference models need (under 100 MiB and 1 s here), far below a
    /// board's memory.
    fn default() -> Limits {
        Limits {
            memory_mib: 1024,
            seconds: 60.0,
        }
    }
}

/// Why a model was refused.
#[derive(Debug, thiserror::Error)]
pub enum VetError {
    #[error("cannot start the child process that prepares {card}: {error}")]
    Spawn {
        card: PathBuf,
        error: std::io::Error,
    },
    #[error("{card}: {reason}")]
    Refused { card: PathBuf, reason: String },
    #[error(
        "{card}: preparing the model used more than {limit_mib} MiB ({detail}); the model is refused (raise the limit with --memory-mib only for a model you trust)"
    )]
    Memory {
        card: PathBuf,
        limit_mib: u64,
        detail: String,
    },
    #[error(
        "{card}: preparing the model took longer than {seconds} s; the model is refused (raise the limit with --seconds only for a model you trust)"
    )]
    Time { card: PathBuf, seconds: f64 },
}

/// Prepares the card's model in a child process under `limits`; the time it took.
pub fn vet(card: &Path, limits: Limits) -> Result<Duration, VetError> {
    if !(limits.seconds.is_finite() && limits.seconds > 0.0) || limits.memory_mib == 0 {
        return Err(VetError::Refused {
            card: card.to_path_buf(),
            reason: format!(
                "the limits must be positive: {} MiB, {} s",
                limits.memory_mib, limits.seconds
            ),
        });
    }
    let exe = std::env::current_exe().map_err(|error| VetError::Spawn {
        card: card.to_path_buf(),
        error,
    })?;
    let mut cmd = Command::new(exe);
    cmd.args(["model", "vet-child"])
        .arg(card)
        // No backtrace: capturing one allocates, which a child at its memory limit cannot.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (data, cpu) = (
        limits.memory_mib.saturating_mul(1024 * 1024),
        limits.seconds.ceil().max(1.0) as u64,
    );
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        // SAFETY: between fork and exec the closure only calls setrlimit, which is
        // async-signal-safe, on values computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for (resource, value) in [(libc::RLIMIT_DATA, data), (libc::RLIMIT_CPU, cpu)] {
                    let limit = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|error| VetError::Spawn {
        card: card.to_path_buf(),
        error,
    })?;
    let mut stderr = child.stderr.take();
    // Read the child's messages beside the wait, so that a talkative child cannot block on
    // a full pipe.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let deadline = Duration::try_from_secs_f64(limits.seconds * 2.0).unwrap_or(Duration::MAX);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => {
                return Err(VetError::Spawn {
                    card: card.to_path_buf(),
                    error,
                });
            }
        }
    };
    let elapsed = started.elapsed();
    let text = reader.join().unwrap_or_default();
    let card = card.to_path_buf();
    let Some(status) = status else {
        return Err(VetError::Time {
            card,
            seconds: limits.seconds,
        });
    };
    if status.success() {
        return Ok(elapsed);
    }
    // What the child said last (not Rust's note about backtraces), and whether it said that
    // an allocation failed: tract and the standard library report a refused allocation as
    // "failed to allocate" (a panic) or "memory allocation of N bytes failed" (an abort).
    let last = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("note:"))
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string();
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("failed to allocate") || l.contains("memory allocation"))
    {
        return Err(VetError::Memory {
            card,
            limit_mib: limits.memory_mib,
            detail: line.trim().trim_start_matches("error: ").to_string(),
        });
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        match status.signal() {
            Some(libc::SIGXCPU) | Some(libc::SIGKILL)
                if elapsed.as_secs_f64() >= limits.seconds =>
            {
                return Err(VetError::Time {
                    card,
                    seconds: limits.seconds,
                });
            }
            Some(signal) => {
                let detail = if last.is_empty() {
                    format!("the child was stopped by signal {signal}")
                } else {
                    format!("{last} (signal {signal})")
                };
                return Err(VetError::Refused {
                    card,
                    reason: format!("preparing the model crashed: {detail}"),
                });
            }
            None => {}
        }
    }
    Err(VetError::Refused {
        card,
        reason: if last.is_empty() {
            format!("preparing the model failed ({status})")
        } else {
            last
        },
    })
}
