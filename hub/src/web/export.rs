//! The exports: CSV of a series, the signed records, checkpoint and verifier key of a device
//! (to verify it independently with `hub verify`), and the national open-data counting schema
//! (schema.data.gouv.fr, `etalab/schema-comptage-mobilites` 0.2.x: `site`, `channel` and
//! `measure` files; see docs/hub-api.md for the mapping). A suppressed value is `"< k"` in
//! CSV and an empty `count` in the open-data file: never a number.

use std::collections::HashMap;

use crate::db::sql::params;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use axum::body::Body;

use super::pages::{self};
use super::params::{self};
use super::{App, WebError, WebResult, stream};
use crate::dates;
use crate::db::query;
use crate::db::series::{self, Order};

/// A CSV field: quoted when needed, and defused when a spreadsheet would read it as a formula.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv(body: Body, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// Every window of one series over a period, one line each, streamed from the database.
pub async fn series_csv(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["model", "kind", "class", "from", "to"])?;
    let period = params::period(&q)?;
    let name = format!("{id}-series.csv");
    let max = app.cfg().limits.max_export_rows;
    let permit = app.heavy_slot().await?;
    let (device, territory, key, range) = app
        .db(move |c, e| {
            let Some(o) = query::device(c, e, &id)? else {
                return Err(WebError::NotFound(format!("no device {id:?}")));
            };
            let infos = query::series_of(c, &id)?;
            let keys: Vec<_> = infos.iter().map(|i| i.key.clone()).collect();
            let key = match params::series_key(&q, &keys)? {
                Some(k) => k,
                None if keys.len() == 1 => keys[0].clone(),
                None => {
                    return Err(WebError::BadRequest(format!(
                        "this device has {} series: name `model`, `kind` and `class`",
                        keys.len()
                    )));
                }
            };
            let info = infos
                .iter()
                .find(|i| i.key == key)
                .ok_or_else(|| WebError::NotFound("no such series".into()))?;
            let wl = pages::window_length(c, &id, &key)?;
            let (from, to) = period.resolve(info.first_ms, info.last_ms + wl);
            let n = series::count_windows(c, &id, &key, (from, to))?;
            if n > max {
                return Err(WebError::BadRequest(format!(
                    "{n} windows: more than {max}; use a shorter period (`from`, `to`)"
                )));
            }
            Ok((id, o.territory, key, (from, to)))
        })
        .await?;
    let body = stream::body(&app, permit, move |c, _, out| {
        out.write(b"device,territory,model,kind,class,window_start,window_end,seq,partial,clock_jumps,observations,value,peak,k,epsilon\n")?;
        series::for_each_window(c, &device, &key, range, max, Order::OldestFirst, |p| {
            let eps = p
                .epsilon_milli
                .map(|e| format!("{}.{:03}", e / 1000, e % 1000))
                .unwrap_or_default();
            out.write(
                format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&p.device),
                    csv_field(&territory),
                    csv_field(&p.model),
                    csv_field(&p.kind),
                    csv_field(&p.class),
                    dates::format(p.start_ms),
                    dates::format(p.start_ms + p.length_ms),
                    p.seq,
                    p.partial,
                    p.clock_jumps,
                    p.n,
                    csv_field(&csv_value(p.value, p.value_suppressed, p.k)),
                    csv_field(&csv_value(p.peak, p.peak_suppressed, p.k)),
                    p.k,
                    eps
                )
                .as_bytes(),
            )?;
            Ok::<_, WebError>(true)
        })
    });
    Ok(csv(body, &name))
}

fn csv_value(v: Option<i64>, suppressed: bool, k: u64) -> String {
    match (v, suppressed) {
        (_, true) => format!("< {k}"),
        (Some(v), false) => v.to_string(),
        (None, false) => String::new(),
    }
}

/// The stored records of a device, one MQTT envelope per line (seq, entry, signature): what
/// `hub verify` checks against the device's key and a signed checkpoint.
pub async fn records(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let permit = app.heavy_slot().await?;
    let id = app
        .db(move |c, e| {
            if query::device(c, e, &id)?.is_none() {
                return Err(WebError::NotFound(format!("no device {id:?}")));
            }
            Ok(id)
        })
        .await?;
    let body = stream::body(&app, permit, move |c, _, out| {
        crate::db::store::for_each_export_line(c, &id, |line| {
            out.write(line)?;
            out.write(b"\n")?;
            Ok::<_, WebError>(())
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson; charset=utf-8")],
        body,
    )
        .into_response())
}

pub async fn checkpoint(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let note = app
        .db(move |c, _| Ok(crate::db::store::checkpoint_note(c, &id)?))
        .await?;
    match note {
        Some(n) => Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], n).into_response()),
        None => Err(WebError::NotFound(
            "no verified checkpoint for this device".into(),
        )),
    }
}

pub async fn vkey(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    key_lines(&app, id, false).await
}

/// `/export/{id}/keys.txt`: every verifier key of the device, one per line, the current one
/// first, then the keys retired by rotations (records signed before a rotation verify with
/// them): what the browser's verifier downloads.
pub async fn keys(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    key_lines(&app, id, true).await
}

/// An enrolled device's verifier key, and with `retired` those its rotations retired, one per
/// line.
async fn key_lines(app: &App, id: String, retired: bool) -> WebResult<Response> {
    let text = app
        .db(move |_, e| {
            let d = e
                .devices
                .get(&id)
                .ok_or_else(|| WebError::NotFound(format!("no enrolled device {id:?}")))?;
            let mut out = format!("{}\n", d.key);
            if retired {
                for r in &d.retired_keys {
                    out.push_str(r.key.trim());
                    out.push('\n');
                }
            }
            Ok(out)
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

// ---- the national open-data counting schema ----------------------------------------------------

fn site_id(territory: &str, device: &str) -> String {
    format!("{territory}.{device}")
}

fn channel_id(territory: &str, device: &str, model: &str, class: &str) -> String {
    format!("{territory}.{device}.{model}.{}", class.replace(':', "."))
}

/// The series a device contributes to the counting schema: its line counts (objects that
/// crossed a line, per class and direction: what the schema counts) when it has any, else its
/// per-frame counts (faces, objects in view).
fn counted_series(
    c: &crate::db::sql::Connection,
    device: &str,
) -> Result<Vec<query::SeriesInfo>, WebError> {
    let all = query::series_of(c, device)?;
    let lines = all.iter().any(|s| s.key.kind == "line_count");
    let wanted = if lines { "line_count" } else { "count" };
    Ok(all.into_iter().filter(|s| s.key.kind == wanted).collect())
}

/// A series' object class, mobility type and direction for the schema: a line count's class
/// is "line:class:dir".
fn schema_channel(kind: &str, class: &str) -> (&'static str, &'static str, String, &'static str) {
    match series::split_line_class(class) {
        Some((line, object, inward)) if kind == "line_count" => (
            mobility_type(object),
            if inward { "in" } else { "out" },
            format!("{line} : {}", if inward { "entrée" } else { "sortie" }),
            "passages per window; empty = < k",
        ),
        _ => (
            mobility_type(class),
            "",
            String::new(),
            "object-frames per window; empty = < k",
        ),
    }
}

/// The schema's `mobility_type` for a model's class label.
pub fn mobility_type(class: &str) -> &'static str {
    match class.to_ascii_lowercase().as_str() {
        "person" | "pedestrian" | "face" | "people" => "PEDESTRIAN",
        "bicycle" | "bike" | "cyclist" => "BIKE",
        "car" => "CAR",
        "bus" => "BUS",
        "truck" => "TRUCK",
        "van" => "VAN",
        "motorcycle" | "motorbike" | "scooter" => "TWO WHEELS MOTORIZED",
        "e-scooter" => "E-SCOOTER",
        _ => "UNDEFINED",
    }
}

pub async fn comptage_sites(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let body = app
        .db(|_, e| {
            let mut out = String::from(
                "site_id,parent_site_id,site_name,fr_insee_code,xlong,ylat,external_ids,infrastructure_type\n",
            );
            for d in e.devices.values() {
                let (name, insee, lon, lat) = match &d.site {
                    Some(s) => (
                        s.name.clone(),
                        s.insee.clone().unwrap_or_default(),
                        s.lon.to_string(),
                        s.lat.to_string(),
                    ),
                    None => (d.id.clone(), String::new(), String::new(), String::new()),
                };
                out.push_str(&format!(
                    "{},{},{},{},{},{},,\n",
                    csv_field(&site_id(&d.territory, &d.id)),
                    csv_field(&d.territory),
                    csv_field(&name),
                    csv_field(&insee),
                    lon,
                    lat
                ));
            }
            Ok(out)
        })
        .await?;
    Ok(csv(body.into(), "comptagemobilites_site.csv"))
}

pub async fn comptage_channels(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &[])?;
    let provider = format!("IAT hub {}", app.cfg().hub_name);
    let body = app
        .db(move |c, e| {
            let mut out = String::from(
                "channel_id,channel_provider_id,site_provider_id,site_id,mobility_type,comment,counter_transmission_type,publication_transmission_type,counter_type,direction,provider_direction_code,provider_direction_name,data_provider_name,temporality,started_at,ended_at,last_updated_at,time_step,provider_portal_url\n",
            );
            for d in e.devices.values() {
                for info in counted_series(c, &d.id)? {
                    let k = &info.key;
                    let (mobility, dir_code, dir_name, comment) = schema_channel(&k.kind, &k.class);
                    let input = d
                        .models
                        .iter()
                        .find(|m| m.id == k.model)
                        .and_then(|m| m.input.as_deref());
                    let counter_type = match input {
                        Some("image") => "VIDEO SENSOR",
                        Some("audio") => "ACOUSTIC",
                        _ => "OTHER",
                    };
                    let step = pages::window_length(c, &d.id, k)? / 1000;
                    out.push_str(&format!(
                        "{},{},,{},{},{},REMOTE TRANSMISSION,API,{},,{},{},{},PERMANENT,{},,{},{},\n",
                        csv_field(&channel_id(&d.territory, &d.id, &k.model, &k.class)),
                        csv_field(&format!("{}/{}", k.model, k.class)),
                        csv_field(&site_id(&d.territory, &d.id)),
                        mobility,
                        // 50 characters at most, says the schema.
                        comment,
                        counter_type,
                        dir_code,
                        csv_field(&dir_name),
                        csv_field(&provider),
                        dates::format(info.first_ms),
                        dates::format(info.last_ms),
                        step
                    ));
                }
            }
            Ok(out)
        })
        .await?;
    Ok(csv(body.into(), "comptagemobilites_channel.csv"))
}

pub async fn comptage_measures(
    State(app): State<App>,
    Query(q): Query<HashMap<String, String>>,
) -> WebResult<Response> {
    params::only(&q, &["device", "from", "to"])?;
    let period = params::period(&q)?;
    let device = params::opt(&q, "device").map(str::to_owned);
    let max = app.cfg().limits.max_export_rows;
    let permit = app.heavy_slot().await?;
    let from = period.from.unwrap_or(i64::MIN);
    let to = period.to.unwrap_or(i64::MAX);
    // Bound the answer before streaming it.
    let devices = app
        .db(move |c, e| {
            let devices: Vec<_> = match &device {
                Some(id) => vec![
                    e.devices
                        .get(id)
                        .ok_or_else(|| WebError::NotFound(format!("no enrolled device {id:?}")))?,
                ],
                None => e.devices.values().collect(),
            };
            let mut total: i64 = 0;
            for d in &devices {
                total += c
                    .prepare_cached(
                        "SELECT COUNT(*) FROM series WHERE device = ?1
                           AND kind IN ('count', 'line_count')
                           AND start_ms >= ?2 AND start_ms < ?3",
                    )?
                    .query_row(params![d.id, from, to], |r| r.get::<_, i64>(0))?;
            }
            if total as u64 > max {
                return Err(WebError::BadRequest(format!(
                    "{total} measures: more than {max}; name a `device` or a shorter period (`from`, `to`)"
                )));
            }
            Ok(devices
                .iter()
                .map(|d| (d.id.clone(), d.territory.clone()))
                .collect::<Vec<_>>())
        })
        .await?;
    let body = stream::body(&app, permit, move |c, _, out| {
        out.write(b"channel_id,counter_id,start_datetime,end_datetime,count\n")?;
        for (id, territory) in &devices {
            for info in counted_series(c, id)? {
                let k = &info.key;
                let ch = csv_field(&channel_id(territory, id, &k.model, &k.class));
                series::for_each_window(c, id, k, (from, to), max, Order::OldestFirst, |p| {
                    // A suppressed count is left empty (the schema's "no count"): the
                    // schema has no "< k", and a number would undo the suppression.
                    let count = match (p.value, p.value_suppressed) {
                        (Some(v), false) => v.to_string(),
                        _ => String::new(),
                    };
                    out.write(
                        format!(
                            "{ch},{},{},{},{count}\n",
                            csv_field(id),
                            dates::format(p.start_ms),
                            dates::format(p.start_ms + p.length_ms)
                        )
                        .as_bytes(),
                    )?;
                    Ok::<_, WebError>(true)
                })?;
            }
        }
        Ok(())
    });
    Ok(csv(body, "comptagemobilites_measure.csv"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(csv_field("-12"), "-12");
        assert_eq!(csv_field("< 3"), "< 3");
    }

    #[test]
    fn the_channel_comment_fits_the_schema() {
        assert!("object-frames per window; empty = < k".len() <= 50);
        assert_eq!(mobility_type("face"), "PEDESTRIAN");
        assert_eq!(mobility_type("Bicycle"), "BIKE");
        assert_eq!(mobility_type("dog"), "UNDEFINED");
    }
}
