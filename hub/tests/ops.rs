//! Issue 16 (operable): `/metrics` and `/healthz` of the real `hub` binary, ingesting from a
//! real mosquitto: the counters follow what ingest did, the gauges what the database holds, and
//! the probe tells a lost broker (reported, still serving) from a working hub.

mod attack;
mod common;

use std::time::Duration;

use attack::{Mosquitto, Publisher, wait_for};

fn get(url: &str) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).call().expect("GET");
    let kind = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = r.body_mut().read_to_string().expect("body");
    (r.status().as_u16(), kind, body)
}

/// The value of the sample `name` (with its labels, as written) in an OpenMetrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[test]
fn metrics_and_healthz_follow_ingest_and_the_broker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::plain(tmp.path());
    let (hub, dev, base) = attack::running_hub(tmp.path(), &broker);
    assert!(
        wait_for(Duration::from_secs(20), || hub.stored("dev-1") >= 20),
        "the hub stores too little:\n{}",
        hub.log()
    );
    drop(dev);

    // Counters: every stored record was counted, once.
    let stored = hub.stored("dev-1") as f64;
    let metrics = || get(&format!("{base}/metrics"));
    assert!(
        wait_for(Duration::from_secs(10), || {
            sample(&metrics().2, "iat_hub_records_total{outcome=\"stored\"}") == Some(stored)
        }),
        "stored {stored}:\n{}",
        metrics().2
    );
    let (code, kind, text) = metrics();
    assert_eq!(code, 200);
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    assert_eq!(sample(&text, "iat_hub_devices_enrolled"), Some(1.0));
    assert_eq!(sample(&text, "iat_hub_broker_connected"), Some(1.0));
    assert!(sample(&text, "iat_hub_messages_total").unwrap() >= stored);
    assert!(sample(&text, "iat_hub_db_batch_seconds_count").unwrap() >= 1.0);
    assert!(text.trim_end().ends_with("# EOF"));

    // A stranger's message: rejected, counted, one UNENROLLED alarm open.
    let bot = Publisher::connect("bot", broker.port, None);
    bot.publish("iat/v1/fr-evil/bot-1/agg/x", b"{}".to_vec(), false);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let t = metrics().2;
            sample(&t, "iat_hub_records_total{outcome=\"rejected\"}") == Some(1.0)
                && sample(&t, "iat_hub_alarms_open{kind=\"UNENROLLED\"}") == Some(1.0)
        }),
        "{}",
        metrics().2
    );
    drop(bot);

    let (code, _, body) = get(&format!("{base}/healthz"));
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["database"], "ok");
    assert_eq!(h["ingest"], "running");
    assert_eq!(h["broker"], "connected");
    assert_eq!(get(&format!("{base}/healthz?x=1")).0, 400);

    // The broker goes away: the hub says so and keeps serving; it is not "failing".
    drop(broker);
    assert!(
        wait_for(Duration::from_secs(10), || {
            let (code, _, body) = get(&format!("{base}/healthz"));
            code == 200 && body.contains("\"broker\":\"reconnecting\"")
        }),
        "{}",
        get(&format!("{base}/healthz")).2
    );
    assert_eq!(sample(&metrics().2, "iat_hub_broker_connected"), Some(0.0));
}
