//! The JSON API for the dashboard and other programs: devices, a device's series (windows or
//! buckets), the register and the alarms. A suppressed value is `"< k"`, never a number
//! (docs/hub-api.md). The downloads (CSV, records, open data) are [`super::export`].

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::pages::{self, SeriesView};
use super::params::{self, Bucket};
use super::{App, WebError, WebResult, stream};
use crate::dates;
use crate::db::query;
use crate::db::series::{self, Order, Point};

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

fn bucket_json(kind: &str, b: &series::Bucket) -> Value {
    let value = match b.value(kind) {
        Some(v) => json!(v),
        None if b.suppressed > 0 => Value::String(format!("< {}", b.k_max)),
        None => Value::Null,
    };
    json!({
        "start": dates::format(b.start_ms),
        "end": dates::format(b.end_ms),
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
/// `[from, to)` in buckets (`bucket`: `auto`, a duration, or `window` for every window, at most
/// [`super::limits::Limits::max_series_windows`] of them). A heavy query: it waits for one of
/// the few places (503 when none frees up), every window is streamed from the database, and
/// the buckets are written one by one.
pub async fn series(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["model", "kind", "class", "from", "to", "bucket"])?;
    let period = params::period(&q)?;
    let bucket = params::bucket(&q)?;
    let max = app.cfg().limits.max_series_windows;
    let permit = app.heavy_slot().await?;
    let (answer, permit) = app
        .db(move |c, e| {
            // Held by the blocking work itself: a client that gives up does not free it early.
            let permit = permit;
            if query::device(c, e, &id)?.is_none() {
                return Err(WebError::NotFound(format!("no device {id:?}")));
            }
            let infos = query::series_of(c, &id)?;
            let keys: Vec<_> = infos.iter().map(|i| i.key.clone()).collect();
            let Some(key) = params::series_key(&q, &keys)? else {
                return Ok((
                    Answer::Whole(
                        json!({ "device": id, "series": infos })
                            .to_string()
                            .into_bytes(),
                    ),
                    permit,
                ));
            };
            let info = infos
                .into_iter()
                .find(|i| i.key == key)
                .ok_or_else(|| WebError::NotFound("no such series".into()))?;
            if bucket == Bucket::Window {
                let wl = pages::window_length(c, &id, &key)?;
                let (from, to) = period.resolve(info.first_ms, info.last_ms + wl);
                let n = series::count_windows(c, &id, &key, (from, to))?;
                if n > max {
                    return Err(WebError::BadRequest(format!(
                        "`bucket=window`: {n} windows in this period, more than {max}; use a shorter period (`from`, `to`), a bucket such as `bucket=1h`, or the CSV export /export/{id}/series.csv?model=...&kind=...&class=..., which streams every window"
                    )));
                }
                let head = json!({
                    "device": id, "model": key.model, "kind": key.kind, "class": key.class,
                    "unit": series::unit(&key.kind),
                    "from": dates::format(from), "to": dates::format(to), "bucket": "window",
                });
                return Ok((
                    Answer::Windows {
                        head: open_object(&head),
                        id,
                        key,
                        range: (from, to),
                    },
                    permit,
                ));
            }
            let SeriesView {
                from,
                to,
                bucket_ms,
                buckets,
                privacy,
                ..
            } = pages::series_view(c, &id, info, period, bucket, None)?;
            let head = json!({
                "device": id, "model": key.model, "kind": key.kind, "class": key.class,
                "unit": series::unit(&key.kind),
                "aggregation": if key.kind == "count" { "sum of the published values" } else { "mean of the published values" },
                "from": dates::format(from), "to": dates::format(to), "bucket_ms": bucket_ms,
                "privacy": privacy.iter().map(|(k, e)| json!({"k": k, "epsilon": e.map(|e| e as f64 / 1000.0)})).collect::<Vec<_>>(),
            });
            // One bucket's JSON at a time: never a tree of the whole answer.
            let mut out = open_object(&head);
            out.extend_from_slice(b",\"buckets\":[");
            for (i, b) in buckets.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut out, &bucket_json(&key.kind, b))
                    .map_err(|e| WebError::Internal(format!("json: {e}")))?;
            }
            out.extend_from_slice(b"]}");
            Ok((Answer::Whole(out), permit))
        })
        .await?;
    let json = [(header::CONTENT_TYPE, "application/json")];
    match answer {
        Answer::Whole(bytes) => {
            drop(permit);
            Ok((json, bytes).into_response())
        }
        Answer::Windows {
            head,
            id,
            key,
            range,
        } => {
            let body = stream::body(&app, permit, move |c, _, out| {
                out.write(&head)?;
                out.write(b",\"windows\":[")?;
                let mut first = true;
                series::for_each_window(c, &id, &key, range, max, Order::OldestFirst, |p| {
                    if !first {
                        out.write(b",")?;
                    }
                    first = false;
                    let w = serde_json::to_vec(&window_json(&p))
                        .map_err(|e| WebError::Internal(format!("json: {e}")))?;
                    out.write(&w)?;
                    Ok::<_, WebError>(true)
                })?;
                out.write(b"]}")
            });
            Ok((json, body).into_response())
        }
    }
}

/// What the series API answers: a whole JSON document, or the windows of a series to stream
/// after `head` (an object without its closing brace).
enum Answer {
    Whole(Vec<u8>),
    Windows {
        head: Vec<u8>,
        id: String,
        key: series::SeriesKey,
        range: (i64, i64),
    },
}

/// A JSON object's text without its closing brace, so that a large array can follow.
fn open_object(v: &Value) -> Vec<u8> {
    let mut text = v.to_string().into_bytes();
    text.pop();
    text
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

/// `GET /api/devices/{id}/consistency?from=M&to=N`: the RFC 6962 consistency proof from the
/// device's tree of its first M records to its tree of its first N (docs/hub-api.md). The
/// browser's verifier asks for it to check that the checkpoint it verifies today extends the
/// one it verified on an earlier visit. It proves nothing by itself: the reader checks it
/// against the two roots the device signed.
pub async fn consistency(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Json<Value>> {
    params::only(&q, &["from", "to"])?;
    let number = |name: &str| -> WebResult<u64> {
        params::opt(&q, name)
            .ok_or_else(|| WebError::BadRequest(format!("`{name}` is needed: a record count")))?
            .parse()
            .map_err(|_| WebError::BadRequest(format!("`{name}`: a whole number of records")))
    };
    let (from, to) = (number("from")?, number("to")?);
    if from > to {
        return Err(WebError::BadRequest(format!(
            "`from` ({from}) is after `to` ({to}): a tree can only grow"
        )));
    }
    let _permit = app.heavy_slot().await?;
    app.db(move |c, e| {
        if query::device(c, e, &id)?.is_none() {
            return Err(WebError::NotFound(format!("no device {id:?}")));
        }
        let Some(leaves) = crate::db::store::leaves(c, &id, to)? else {
            return Err(WebError::NotFound(format!(
                "this hub does not hold {to} records of {id:?}"
            )));
        };
        let proof = audit::merkle::consistency_proof(&leaves, from)
            .map_err(|e| WebError::Internal(e.to_string()))?;
        let proof: Vec<String> = proof.iter().map(|h| verify::hex(h)).collect();
        Ok(Json(json!({ "from": from, "to": to, "proof": proof })))
    })
    .await
}
