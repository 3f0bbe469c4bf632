// A class named by a free string instead of a label of the aggregator's closed set (the
// model card's labels): an observation takes a `Label`, which only `Labels::get` hands out.
use aggregate::{Aggregator, Instant, Observation};

fn observe(agg: &mut Aggregator<rand::rngs::StdRng>, at: Instant) {
    let _ = agg.observe(at, Observation::Frame { class: "licence_plate", count: 1 });
}

fn main() {}
