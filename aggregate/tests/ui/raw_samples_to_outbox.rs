// Raw audio samples handed to an outbox: rejected, an outbox takes only `Record`s.
use aggregate::Outbox;

fn publish(outbox: &mut impl Outbox, samples: Vec<f32>) {
    let _ = outbox.append(samples);
}

fn main() {}
