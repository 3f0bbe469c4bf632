// A record built outside the aggregator: its fields are private.
fn main() {
    let _ = aggregate::Record { partial: false };
}
