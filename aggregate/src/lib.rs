//! Windows, aggregates and privacy rules: the only way to build what may leave a device. It
//! must never do IO nor hand out a record that did not pass the privacy rules.
//!
//! Models report observations (objects per frame, speech per chunk, levels), each naming its
//! class by a [`Label`] from the closed set the aggregator was given (the model card's labels); the
//! [`Aggregator`] sums them per window on the monotonic clock and, when a window closes,
//! applies the privacy rules (noise, coarsening, k-suppression) to produce a [`Record`]. A
//! `Record` has no public constructor, no `Deserialize` and no `Clone`: a publisher that takes
//! `Record`s can only ever be handed aggregates. This crate does no IO.

mod aggregator;
pub mod canonical;
pub mod label;
pub mod privacy;
pub mod record;
pub mod window;

pub use aggregator::{Aggregator, Kind, Observation};
pub use label::{Label, LabelError, Labels};
pub use privacy::{BudgetState, Published, RawRules, Rules, Unit};
pub use record::{Envelope, ModelRef, Record, RecordView};
pub use window::Instant;

/// What accepts records for the outside world: the audit log/outbox, then the publisher.
/// It takes [`Record`]s and nothing else.
pub trait Outbox {
    type Error;
    /// Appends the record durably and returns its sequence number.
    fn append(&mut self, record: Record) -> Result<u64, Self::Error>;
}
