// A parsed record view is for reading: it cannot be published again.
use aggregate::Outbox;

fn republish(outbox: &mut impl Outbox, bytes: &[u8]) {
    let view = aggregate::RecordView::parse(bytes).unwrap();
    let _ = outbox.append(view);
}

fn main() {}
