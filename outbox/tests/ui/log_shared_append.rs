// Appending through the read-only view of the log that the publisher uses: refused.
fn leak(outbox: &outbox::AuditOutbox) {
    let _ = outbox.log().append(b"{\"frame\":[1,2,3]}");
}

fn main() {}
