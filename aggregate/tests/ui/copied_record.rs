// A record cannot be duplicated (each window is appended once).
fn publish_twice(r: aggregate::Record) -> (aggregate::Record, aggregate::Record) {
    (r.clone(), r)
}

fn main() {}
