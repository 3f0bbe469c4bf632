//! The audit log as the device's outbox: each record is encoded canonically with the device's
//! identity and its log position, signed and appended durably; checkpoints are signed every
//! few records. This is the only writer of anything that may leave the device, and it must
//! never accept anything but a sealed [`aggregate::Record`]: it hands out no mutable access
//! to the log beneath it (compile-fail tests in `tests/ui`).

use std::path::Path;

use aggregate::{Envelope, Outbox, Record};
use audit::{Log, SignerKey, StoreError};

pub struct AuditOutbox {
    log: Log,
    device: String,
    territory: String,
    checkpoint_every: u64,
    since_checkpoint: u64,
}

impl AuditOutbox {
    pub fn open(
        dir: &Path,
        device: &str,
        territory: &str,
        key: &SignerKey,
        checkpoint_every: u64,
        max_total_bytes: Option<u64>,
    ) -> Result<AuditOutbox, StoreError> {
        let opts = audit::Options {
            max_total_bytes,
            ..audit::Options::default()
        };
        let log = Log::open(dir, &hub_link::origin(territory, device), key, opts)?;
        Ok(AuditOutbox {
            log,
            device: device.to_owned(),
            territory: territory.to_owned(),
            checkpoint_every,
            since_checkpoint: 0,
        })
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The hub acknowledged every record up to `last` (its signed ack, verified by the
    /// publisher): they may be pruned. The only change to the log besides [`Outbox::append`].
    pub fn ack(&mut self, last: u64) -> Result<(), StoreError> {
        self.log.ack(last)
    }

    /// Signs a checkpoint of everything appended so far.
    pub fn checkpoint(&mut self) -> Result<String, StoreError> {
        self.since_checkpoint = 0;
        self.log.checkpoint()
    }
}

impl Outbox for AuditOutbox {
    type Error = StoreError;

    fn append(&mut self, record: Record) -> Result<u64, StoreError> {
        let seq = self.log.size();
        let body = record.to_canonical(Envelope {
            device: &self.device,
            territory: &self.territory,
            seq,
        });
        let appended = self.log.append(&body)?;
        debug_assert_eq!(appended, seq, "one writer: the log's size is the next seq");
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.checkpoint_every {
            self.checkpoint()?;
        }
        Ok(appended)
    }
}
