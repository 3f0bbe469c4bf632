//! The sensor sources' configuration and their behaviour without their hardware: a node or
//! I2C source needs a measurement card of its own source; a bus that is not there is retried
//! with a back-off while windows keep closing, and the service still stops cleanly.
//! (The node end to end, from the QEMU firmware to the hub, is tests/tests/it/node.rs.)

mod support;

use std::time::Duration;

use support::{agent, device, records, start, terminate, text, verify};

fn sensor_pipeline(card: &str, source: &str) -> String {
    format!(
        "\n[[pipeline]]\nname = \"env\"\nmodel = \"{{root}}/models/{card}/card.toml\"\n\
         aggregates = [\"level_stats\"]\nwindow = \"1s\"\n[pipeline.source]\n{source}\n\
         [pipeline.privacy]\nk = 1\n"
    )
}

fn run_error(pipelines: &str) -> String {
    let (_dir, config) = device(pipelines);
    let o = agent(&["run", "--config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    text(&o)
}

#[test]
fn sources_and_cards_must_match() {
    let e = run_error(
        &sensor_pipeline(
            "silero-vad-16k",
            "kind = \"node\"\ninput = \"/dev/ttyACM0\"",
        )
        .replace("level_stats", "speech_share"),
    );
    assert!(
        e.contains("pipeline[0].model") && e.contains("needs a measurement card of source `node`"),
        "{e}"
    );
    let e = run_error(&sensor_pipeline(
        "node-levels",
        "kind = \"i2c\"\ninput = \"/dev/i2c-1\"",
    ));
    assert!(e.contains("source `bme280`"), "{e}");
    let e = run_error(&sensor_pipeline(
        "node-levels",
        "kind = \"replay\"\npath = \"{root}/models/samples/speech.wav\"",
    ));
    assert!(e.contains("is a measurement card"), "{e}");
    let e = run_error(&sensor_pipeline(
        "bme280-environment",
        "kind = \"i2c\"\naddress = 0x80",
    ));
    assert!(e.contains("pipeline[0].source.address"), "{e}");
    let e = run_error(&sensor_pipeline(
        "node-levels",
        "kind = \"node\"\ninput = \"tcp:localhost\"",
    ));
    assert!(e.contains("pipeline[0].source.input"), "{e}");
    let e = run_error(&sensor_pipeline(
        "node-levels",
        "kind = \"node\"\ninput = \"/dev/ttyACM0\"\ninterval = \"5s\"",
    ));
    assert!(
        e.contains("pipeline[0].source.interval") && e.contains("not a field of a `node` source"),
        "{e}"
    );
}

#[test]
fn a_missing_i2c_bus_is_retried_and_the_service_still_stops_cleanly() {
    let (dir, config) = device(&sensor_pipeline(
        "bme280-environment",
        "kind = \"i2c\"\ninput = \"/dev/i2c-iat-test-absent\"\ninterval = \"1s\"",
    ));
    let child = start(&config);
    std::thread::sleep(Duration::from_millis(3500));
    let (o, _) = terminate(child, Duration::from_secs(20));
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("i2c: cannot open i2c device /dev/i2c-iat-test-absent"),
        "{out}"
    );
    assert!(
        out.contains("retrying in 1 s") && out.contains("retrying in 2 s"),
        "{out}"
    );
    // Windows closed on time meanwhile, with no reading: nothing is invented.
    assert!(verify(dir.path()).status.success());
    let recs = records(dir.path());
    assert!(recs.len() >= 3, "{recs:?}");
    assert!(recs.iter().all(|r| r.model.id == "bme280-environment"));
    assert!(
        recs.iter()
            .all(|r| r.aggregates.level_stats.values().all(|l| l.n == 0)),
        "{recs:?}"
    );
}

#[test]
fn a_method_that_is_not_the_card_s_is_refused() {
    let cards = tempfile::tempdir().unwrap();
    let src = support::root().join("models/bme280-environment");
    std::fs::copy(src.join("card.toml"), cards.path().join("card.toml")).unwrap();
    let method = std::fs::read_to_string(src.join("method.md")).unwrap();
    std::fs::write(cards.path().join("method.md"), method + "\nedited\n").unwrap();
    let e = run_error(
        &sensor_pipeline("bme280-environment", "kind = \"i2c\"").replace(
            "{root}/models/bme280-environment/card.toml",
            cards.path().join("card.toml").to_str().unwrap(),
        ),
    );
    assert!(
        e.contains("the method is not the one the card describes"),
        "{e}"
    );
}
