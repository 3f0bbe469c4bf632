// A label made by hand, to name a class the card does not declare: `Label` has no public
// constructor.
fn main() {
    let _ = aggregate::Label(std::sync::Arc::from("licence_plate"));
}
