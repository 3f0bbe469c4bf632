// A record written by hand, its fields filled in to carry raw data, appended to the outbox:
// `Record` can only be built by the aggregator.
use aggregate::Outbox;

fn leak(outbox: &mut outbox::AuditOutbox) {
    let r = aggregate::Record { partial: false };
    let _ = outbox.append(r);
}

fn main() {}
