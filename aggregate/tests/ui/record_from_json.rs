// A record parsed from bytes (e.g. a raw frame dressed as JSON): `Record` is not Deserialize.
fn main() {
    let _: aggregate::Record = serde_json::from_str("{}").unwrap();
}
