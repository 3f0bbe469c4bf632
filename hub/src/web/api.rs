//! The JSON API for the dashboard and other programs: devices, a device's series (windows or
//! buckets), the register and the alarms. A suppressed value is `"< k"`, never a number
//! (docs/hub-api.md). The downloads (CSV, records, open data) are [`super::export`].

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde_json::{Value, json};

use super::pages::{self, SeriesView};
use super::params::{self, Bucket};
use super::{App, WebError, WebResult};
use crate::dates;
use crate::db::query;
use crate::db::series::{self, Order, Point};

/// Most windows one request returns (a year of 1-minute windows is 525,600).
pub const MAX_WINDOWS: u64 = 1_000_000;

pub async fn devices(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &[])?;
    let d = app.db(|c, e| Ok(query::devices(c, e)?)).await?;
    Ok(Json(json!({ "devices": d })))
}

pub async fn device(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &[])?;
    app.db(move |c, e| {
        let Some(o) = query::device(c, e, &id)? else {
            return Err(WebError::NotFound(format!("no device {id:?}")));
        };
        let s = query::series_of(c, &id)?;
        Ok(Json(json!({ "device": o, "series": s })))
    })
    .await
}

fn value_json(v: Option<i64>, suppressed: bool, k: u64) -> Value {
    match (v, suppressed) {
        (_, true) => Value::String(format!("< {k}")),
        (Some(v), false) => json!(v),
        (None, false) => Value::Null,
    }
}

fn window_json(p: &Point) -> Value {
    json!({
        "start": dates::format(p.start_ms),
        "end": dates::format(p.start_ms + p.length_ms),
        "seq": p.seq,
        "partial": p.partial,
        "clock_jumps": p.clock_jumps,
        "n": p.n,
        "value": value_json(p.value, p.value_suppressed, p.k),
        "peak": value_json(p.peak, p.peak_suppressed, p.k),
        "k": p.k,
        "epsilon": p.epsilon_milli.map(|e| e as f64 / 1000.0),
        "budget": p.budget.as_ref().map(|b| json!({
            "day": b.day,
            "epsilon": b.budget_milli as f64 / 1000.0,
            "spent": b.spent_milli as f64 / 1000.0,
            "withheld": b.withheld,
        })),
    })
}

fn bucket_json(kind: &str, b: &series::Bucket, bucket_ms: i64) -> Value {
    let value = match b.value(kind) {
        Some(v) => json!(v),
        None if b.suppressed > 0 => Value::String(format!("< {}", b.k_max)),
        None => Value::Null,
    };
    json!({
        "start": dates::format(b.start_ms),
        "end": dates::format(b.start_ms + bucket_ms),
        "windows": b.windows,
        "suppressed_windows": b.suppressed,
        "value": value,
        "peak": b.peak,
        "n": b.n,
        "k": b.k_max,
        "epsilon_min": b.epsilon_milli_min.map(|e| e as f64 / 1000.0),
        "withheld_windows": b.withheld,
    })
}

/// The series of a device: their list without `model`/`kind`/`class`, or one series over
/// `[from, to)` in buckets (`bucket`: `auto`, a duration, or `window` for every window).
pub async fn series(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &["model", "kind", "class", "from", "to", "bucket"])?;
    let period = params::period(&q)?;
    let bucket = params::bucket(&q)?;
    app.db(move |c, e| {
        if query::device(c, e, &id)?.is_none() {
            return Err(WebError::NotFound(format!("no device {id:?}")));
        }
        let infos = query::series_of(c, &id)?;
        let keys: Vec<_> = infos.iter().map(|i| i.key.clone()).collect();
        let Some(key) = params::series_key(&q, &keys)? else {
            return Ok(Json(json!({ "device": id, "series": infos })));
        };
        let info = infos
            .into_iter()
            .find(|i| i.key == key)
            .ok_or_else(|| WebError::NotFound("no such series".into()))?;
        if bucket == Bucket::Window {
            let wl = pages::window_length(c, &id, &key)?;
            let (from, to) = period.resolve(info.first_ms, info.last_ms + wl);
            let w = series::windows(c, &id, &key, (from, to), MAX_WINDOWS + 1, Order::OldestFirst)?;
            if w.len() as u64 > MAX_WINDOWS {
                return Err(WebError::BadRequest(format!(
                    "more than {MAX_WINDOWS} windows: use a shorter period or a bucket"
                )));
            }
            return Ok(Json(json!({
                "device": id, "model": key.model, "kind": key.kind, "class": key.class,
                "unit": series::unit(&key.kind),
                "from": dates::format(from), "to": dates::format(to), "bucket": "window",
                "windows": w.iter().map(window_json).collect::<Vec<_>>(),
            })));
        }
        let SeriesView {
            from,
            to,
            bucket_ms,
            buckets,
            privacy,
            ..
        } = pages::series_view(c, &id, info, period, bucket)?;
        Ok(Json(json!({
            "device": id, "model": key.model, "kind": key.kind, "class": key.class,
            "unit": series::unit(&key.kind),
            "aggregation": if key.kind == "count" { "sum of the published values" } else { "mean of the published values" },
            "from": dates::format(from), "to": dates::format(to), "bucket_ms": bucket_ms,
            "privacy": privacy.iter().map(|(k, e)| json!({"k": k, "epsilon": e.map(|e| e as f64 / 1000.0)})).collect::<Vec<_>>(),
            "buckets": buckets.iter().map(|b| bucket_json(&key.kind, b, bucket_ms)).collect::<Vec<_>>(),
        })))
    })
    .await
}

pub async fn register(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &[])?;
    let r = app.db(|c, e| Ok(query::register(c, e)?)).await?;
    Ok(Json(json!({ "devices": r })))
}

pub async fn alarms(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(
        &q,
        &["device", "kind", "severity", "open", "page", "per_page"],
    )?;
    let (filter, page, per_page) = params::alarm_filter(&q, 100)?;
    let p = app
        .db(move |c, _| Ok(query::alarm_page(c, &filter, page, per_page)?))
        .await?;
    Ok(Json(json!(p)))
}
