// The log beneath the outbox, taken mutably to append bytes without a record: the outbox
// hands out no `&mut Log`.
fn leak(outbox: &mut outbox::AuditOutbox) {
    let _ = outbox.log_mut().append(b"{\"frame\":[1,2,3]}");
}

fn main() {}
