// Raw bytes (an encoded frame, a JSON body written by hand) appended to the outbox: it takes
// only a sealed `Record`.
use aggregate::Outbox;

fn leak(outbox: &mut outbox::AuditOutbox, frame: Vec<u8>) {
    let _ = outbox.append(frame);
}

fn main() {}
