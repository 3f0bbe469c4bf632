//! Query parameters, validated once: unknown names, bad dates, bad buckets and empty periods
//! are a 400 with a message that says what is expected. Pure.

use std::collections::HashMap;

use crate::dates;
use crate::db::query::{AlarmFilter, MAX_PER_PAGE};
use crate::db::series::SeriesKey;
use crate::db::store::Severity;

use super::WebError;
use super::i18n::Locale;

/// Rejects parameters outside `allowed` (and `lang`, the language of a page: [`super::i18n`]).
pub fn only(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), WebError> {
    let mut unknown: Vec<&str> = q
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k) && *k != "lang")
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort();
    Err(WebError::BadRequest(format!(
        "unknown parameter(s) {}; this endpoint takes {}",
        unknown.join(", "),
        if allowed.is_empty() {
            "none".to_owned()
        } else {
            allowed.join(", ")
        }
    )))
}

/// A non-empty parameter, if given.
pub fn opt<'a>(q: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    q.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

/// The alarm list's filter and page: `device`, `kind`, `severity` (that and above: `critical`,
/// `high`, `warning`, `notice`), `open` (`true`/`false`), `page` (from 1), `per_page` (1 to
/// [`crate::db::query::MAX_PER_PAGE`], default `default_per_page`).
pub fn alarm_filter(
    q: &HashMap<String, String>,
    default_per_page: u64,
) -> Result<(AlarmFilter, u64, u64), WebError> {
    let open_only = match opt(q, "open") {
        None | Some("false") => false,
        Some("true") => true,
        Some(o) => {
            return Err(WebError::BadRequest(format!(
                "`open`: {o:?}; use true or false"
            )));
        }
    };
    let severity = match opt(q, "severity") {
        None => None,
        Some(s) => Some(Severity::parse(s).ok_or_else(|| {
            WebError::BadRequest(format!(
                "`severity`: {s:?}; use critical, high, warning or notice (that severity and above)"
            ))
        })?),
    };
    let kind = opt(q, "kind").map(str::to_owned);
    if let Some(k) = &kind
        && (k.len() > 32 || !k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
    {
        return Err(WebError::BadRequest(format!(
            "`kind`: {k:?}; an alarm kind like FORK, GAP or UNENROLLED"
        )));
    }
    let number = |name: &str, default: u64, max: u64| -> Result<u64, WebError> {
        match opt(q, name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    WebError::BadRequest(format!("`{name}`: {v:?}; a whole number from 1 to {max}"))
                }),
        }
    };
    let page = number("page", 1, 1_000_000)?;
    let per_page = number("per_page", default_per_page, MAX_PER_PAGE)?;
    Ok((
        AlarmFilter {
            device: opt(q, "device").map(str::to_owned),
            kind,
            severity,
            open_only,
        },
        page,
        per_page,
    ))
}

/// `from`/`to` as given (each optional), checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

pub fn period(q: &HashMap<String, String>) -> Result<Period, WebError> {
    let date = |name: &str| -> Result<Option<i64>, WebError> {
        match opt(q, name) {
            None => Ok(None),
            Some(s) => dates::parse(s).map(Some).ok_or_else(|| {
                WebError::BadRequest(format!(
                    "`{name}`: {s:?} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC)"
                ))
            }),
        }
    };
    let p = Period {
        from: date("from")?,
        to: date("to")?,
    };
    if let (Some(f), Some(t)) = (p.from, p.to)
        && f >= t
    {
        return Err(WebError::BadRequest(
            "`from` must be before `to` (the period is [from, to))".into(),
        ));
    }
    Ok(p)
}

/// The period of a page: `from`/`to` as for [`period`] (exact instants, from the zoom links),
/// or `from_day`/`to_day`, days of the hub's calendar as the period form gives them
/// (`YYYY-MM-DD`; the period runs from the start of `from_day` to the end of `to_day`).
pub fn local_period(q: &HashMap<String, String>, l: &Locale) -> Result<Period, WebError> {
    let p = period(q)?;
    let day = |name: &str, next: bool| -> Result<Option<i64>, WebError> {
        let Some(s) = opt(q, name) else {
            return Ok(None);
        };
        let bad = || {
            WebError::BadRequest(format!(
                "`{name}`: {s:?} is not a day; use YYYY-MM-DD (a day in {})",
                l.tz_name()
            ))
        };
        let d = dates::parse_day(s).ok_or_else(bad)?;
        let d = if next {
            d.tomorrow().map_err(|_| bad())?
        } else {
            d
        };
        l.day_start(d).map(Some).ok_or_else(bad)
    };
    let (from_day, to_day) = (day("from_day", false)?, day("to_day", true)?);
    let both = [
        ("from", "from_day", p.from.is_some() && from_day.is_some()),
        ("to", "to_day", p.to.is_some() && to_day.is_some()),
    ];
    for (a, b, set) in both {
        if set {
            return Err(WebError::BadRequest(format!(
                "give `{a}` or `{b}`, not both"
            )));
        }
    }
    let p = Period {
        from: p.from.or(from_day),
        to: p.to.or(to_day),
    };
    if let (Some(f), Some(t)) = (p.from, p.to)
        && f >= t
    {
        return Err(WebError::BadRequest(
            "the first day must not be after the last".into(),
        ));
    }
    Ok(p)
}

/// The bounds of buckets of `bucket_ms` over `[from, to)` on the hub's calendar: whole days
/// start at local midnight (a day of a time change lasts 23 or 25 hours), whole hours that
/// divide a day start at the same local times every day. `None` for other buckets (they stay
/// aligned on `from`) or more than `max` buckets. The first bound is at or before `from`, the
/// last at or after `to`; they increase strictly.
pub fn calendar_bounds(
    l: &Locale,
    (from, to): (i64, i64),
    bucket_ms: i64,
    max: usize,
) -> Option<Vec<i64>> {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    if bucket_ms <= 0 || bucket_ms % HOUR != 0 || (bucket_ms % DAY != 0 && DAY % bucket_ms != 0) {
        return None;
    }
    let mut day = l.local_date(from)?;
    let mut bounds: Vec<i64> = Vec::new();
    let push = |bounds: &mut Vec<i64>, at: i64| {
        if bounds.last().is_none_or(|&b| at > b) {
            bounds.push(at);
        }
    };
    loop {
        if bucket_ms >= DAY {
            let at = l.day_start(day)?;
            if at <= from {
                bounds.clear();
            }
            push(&mut bounds, at);
            if at >= to {
                break;
            }
            day = day
                .checked_add(jiff::Span::new().days(bucket_ms / DAY))
                .ok()?;
        } else {
            let mut done = false;
            for h in (0i8..24).step_by(usize::try_from(bucket_ms / HOUR).ok()?) {
                let at = l.instant(day.to_datetime(jiff::civil::Time::new(h, 0, 0, 0).ok()?))?;
                if at <= from {
                    bounds.clear();
                }
                push(&mut bounds, at);
                if at >= to {
                    done = true;
                    break;
                }
            }
            if done {
                break;
            }
            day = day.tomorrow().ok()?;
        }
        if bounds.len() > max + 1 {
            return None;
        }
    }
    Some(bounds)
}

impl Period {
    /// The period, with missing ends taken from the data's span `[first, last_end)`.
    pub fn resolve(self, first: i64, last_end: i64) -> (i64, i64) {
        let from = self.from.unwrap_or(first);
        let to = self.to.unwrap_or(last_end.max(from + 1));
        (from, to.max(from + 1))
    }
}

/// How to group windows: each window, a fixed bucket, or automatic (about `target` buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Window,
    Fixed(i64),
    Auto,
}

/// `window`, `auto`, or a duration: `15m`, `1h`, `6h`, `1d`, `7d` (at least a minute).
pub fn bucket(q: &HashMap<String, String>) -> Result<Bucket, WebError> {
    let Some(s) = opt(q, "bucket") else {
        return Ok(Bucket::Auto);
    };
    let bad = || {
        WebError::BadRequest(format!(
            "`bucket`: {s:?}; use `window`, `auto` or a duration like 15m, 1h, 1d (at least 1m)"
        ))
    };
    match s {
        "window" => return Ok(Bucket::Window),
        "auto" => return Ok(Bucket::Auto),
        _ => {}
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = n.checked_mul(unit_ms).ok_or_else(bad)?;
    if !(60_000..=366 * 86_400_000).contains(&ms) {
        return Err(bad());
    }
    Ok(Bucket::Fixed(ms))
}

/// The bucket for about `target` points over `[from, to)`, never finer than `window_ms`.
pub fn auto_bucket(from: i64, to: i64, window_ms: i64, target: i64) -> i64 {
    const STEPS: [i64; 14] = [
        60_000,
        300_000,
        900_000,
        1_800_000,
        3_600_000,
        3 * 3_600_000,
        6 * 3_600_000,
        12 * 3_600_000,
        86_400_000,
        2 * 86_400_000,
        7 * 86_400_000,
        14 * 86_400_000,
        30 * 86_400_000,
        91 * 86_400_000,
    ];
    let span = (to - from).max(1);
    // Each window its own point when they fit (10-second windows over an hour: 360 points),
    // never several windows merged into a bucket that is not a multiple of them.
    if window_ms > 0 && span / window_ms <= target {
        return window_ms;
    }
    for s in STEPS {
        // A whole number of windows per bucket.
        let s = if window_ms > 0 {
            (s + window_ms - 1) / window_ms * window_ms
        } else {
            s
        };
        if s >= window_ms && span / s <= target {
            return s;
        }
    }
    STEPS[STEPS.len() - 1].max(window_ms)
}

/// The series named by `model`, `kind` and `class`, among the device's.
pub fn series_key(
    q: &HashMap<String, String>,
    available: &[SeriesKey],
) -> Result<Option<SeriesKey>, WebError> {
    let (model, kind, class) = (opt(q, "model"), opt(q, "kind"), opt(q, "class"));
    if model.is_none() && kind.is_none() && class.is_none() {
        return Ok(None);
    }
    let matching: Vec<&SeriesKey> = available
        .iter()
        .filter(|k| {
            model.is_none_or(|m| m == k.model)
                && kind.is_none_or(|x| x == k.kind)
                && class.is_none_or(|c| c == k.class)
        })
        .collect();
    match matching.as_slice() {
        [one] => Ok(Some((*one).clone())),
        [] => Err(WebError::NotFound(format!(
            "no series with model={} kind={} class={} on this device",
            model.unwrap_or("*"),
            kind.unwrap_or("*"),
            class.unwrap_or("*")
        ))),
        _ => Err(WebError::BadRequest(format!(
            "{} series match; name `model`, `kind` and `class` (see the series list without them)",
            matching.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn alarm_filters() {
        let (f, page, per) = alarm_filter(
            &q(&[
                ("severity", "high"),
                ("kind", "FORK"),
                ("open", "true"),
                ("page", "3"),
                ("device", "dev-1"),
            ]),
            100,
        )
        .unwrap();
        assert_eq!(f.severity, Some(Severity::High));
        assert_eq!(f.kind.as_deref(), Some("FORK"));
        assert_eq!(f.device.as_deref(), Some("dev-1"));
        assert!(f.open_only);
        assert_eq!((page, per), (3, 100));
        for bad in [
            ("severity", "urgent"),
            ("kind", "fork'--"),
            ("open", "yes"),
            ("page", "0"),
            ("per_page", "501"),
            ("page", "-1"),
        ] {
            let e = alarm_filter(&q(&[bad]), 100).unwrap_err();
            assert!(
                matches!(&e, WebError::BadRequest(m) if m.contains(bad.0)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_400() {
        for bad in [
            &[("from", "yesterday")][..],
            &[("to", "2026-02-30")],
            &[("from", "2026-02-02"), ("to", "2026-02-01")],
            &[("from", "2026-02-02"), ("to", "2026-02-02")],
        ] {
            assert!(
                matches!(period(&q(bad)), Err(WebError::BadRequest(_))),
                "{bad:?}"
            );
        }
        for bad in [
            "0m",
            "1s",
            "x",
            "h",
            "99999999999999999d",
            "400d",
            "1w",
            "-1h",
        ] {
            assert!(
                matches!(bucket(&q(&[("bucket", bad)])), Err(WebError::BadRequest(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            only(&q(&[("form", "x")]), &["from"]),
            Err(WebError::BadRequest(m)) if m.contains("form")
        ));
    }

    #[test]
    fn good_inputs() {
        assert_eq!(
            bucket(&q(&[("bucket", "15m")])).unwrap(),
            Bucket::Fixed(900_000)
        );
        assert_eq!(
            bucket(&q(&[("bucket", "1d")])).unwrap(),
            Bucket::Fixed(86_400_000)
        );
        assert_eq!(bucket(&q(&[])).unwrap(), Bucket::Auto);
        let p = period(&q(&[("from", "2026-01-01")])).unwrap();
        assert_eq!(p.resolve(0, 10).0, dates::parse("2026-01-01").unwrap());
        // A year of 15-minute windows in about 400 points: one a day.
        assert_eq!(auto_bucket(0, 365 * 86_400_000, 900_000, 400), 86_400_000);
        assert_eq!(auto_bucket(0, 86_400_000, 900_000, 400), 900_000);
        assert_eq!(auto_bucket(0, 3_600_000, 900_000, 400), 900_000);
        // Issue 21: 10-second windows over an hour are not merged into minutes.
        assert_eq!(auto_bucket(0, 3_600_000, 10_000, 400), 10_000);
        // Over a day they are, into whole multiples of the window.
        let b = auto_bucket(0, 86_400_000, 10_000, 400);
        assert!(b % 10_000 == 0 && 86_400_000 / b <= 400, "{b}");
        // Windows of 7 minutes never land in 15-minute buckets (2 or 3 windows a bucket).
        assert_eq!(auto_bucket(0, 86_400_000, 420_000, 400), 420_000);
        assert_eq!(auto_bucket(0, 30 * 86_400_000, 420_000, 400) % 420_000, 0);
    }

    fn paris() -> Locale {
        Locale::new(
            crate::web::i18n::Lang::Fr,
            crate::web::i18n::time_zone("Europe/Paris").unwrap(),
        )
    }

    #[test]
    fn the_period_form_gives_local_days() {
        let l = paris();
        let at = |s: &str| dates::parse(s).unwrap();
        // 1 to 31 March 2026 in Paris: from 23:00 UTC on 28 February to 22:00 UTC on 31 March
        // (summer time from the 29th).
        let p = local_period(
            &q(&[("from_day", "2026-03-01"), ("to_day", "2026-03-31")]),
            &l,
        )
        .unwrap();
        assert_eq!(p.from, Some(at("2026-02-28T23:00")));
        assert_eq!(p.to, Some(at("2026-03-31T22:00")));
        // One day is a whole day.
        let p = local_period(
            &q(&[("from_day", "2026-07-14"), ("to_day", "2026-07-14")]),
            &l,
        )
        .unwrap();
        assert_eq!(p.to.unwrap() - p.from.unwrap(), 86_400_000);
        // The zoom links' instants still work; mixing both ways for one end does not.
        let p = local_period(&q(&[("from", "2026-07-14T10:00:00Z")]), &l).unwrap();
        assert_eq!(p.from, Some(at("2026-07-14T10:00")));
        for bad in [
            &[("from_day", "2026-07-14"), ("from", "2026-07-14")][..],
            &[("from_day", "14/07/2026")],
            &[("to_day", "2026-02-30")],
            &[("from_day", "2026-07-15"), ("to_day", "2026-07-14")],
        ] {
            assert!(
                matches!(local_period(&q(bad), &l), Err(WebError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn calendar_buckets_start_at_local_midnight_across_time_changes() {
        let l = paris();
        let at = |s: &str| dates::parse(s).unwrap();
        const H: i64 = 3_600_000;
        // 28 to 31 March 2026: the 29th has 23 hours.
        let b = calendar_bounds(
            &l,
            (at("2026-03-28T10:00"), at("2026-03-30T10:00")),
            24 * H,
            100,
        )
        .unwrap();
        assert_eq!(
            b,
            vec![
                at("2026-03-27T23:00"),
                at("2026-03-28T23:00"),
                at("2026-03-29T22:00"),
                at("2026-03-30T22:00"),
            ]
        );
        assert_eq!(b[2] - b[1], 23 * H);
        // 25 October 2026 has 25 hours.
        let b = calendar_bounds(
            &l,
            (at("2026-10-24T22:00"), at("2026-10-25T23:00")),
            24 * H,
            100,
        )
        .unwrap();
        assert_eq!(b, vec![at("2026-10-24T22:00"), at("2026-10-25T23:00")]);
        // Six-hour buckets keep 00:00, 06:00, 12:00 and 18:00 on the wall clock.
        let b = calendar_bounds(
            &l,
            (at("2026-03-28T23:00"), at("2026-03-29T22:00")),
            6 * H,
            100,
        )
        .unwrap();
        assert_eq!(
            b,
            vec![
                at("2026-03-28T23:00"),
                at("2026-03-29T04:00"),
                at("2026-03-29T10:00"),
                at("2026-03-29T16:00"),
                at("2026-03-29T22:00"),
            ]
        );
        // Hours skipped by the change are not buckets: one-hour buckets that night go
        // 01:00 -> 03:00 local (00:00 -> 01:00 UTC) without a bucket in between.
        let b =
            calendar_bounds(&l, (at("2026-03-29T00:00"), at("2026-03-29T02:00")), H, 100).unwrap();
        assert_eq!(
            b,
            vec![
                at("2026-03-29T00:00"),
                at("2026-03-29T01:00"),
                at("2026-03-29T02:00")
            ]
        );
        // Weeks, from the local day of `from`.
        let b = calendar_bounds(
            &l,
            (at("2026-01-01T12:00"), at("2026-01-20T00:00")),
            7 * 24 * H,
            100,
        )
        .unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], at("2025-12-31T23:00"));
        // Other buckets stay aligned on `from`; too many buckets are refused.
        assert!(calendar_bounds(&l, (0, 86_400_000), 900_000, 100).is_none());
        assert!(calendar_bounds(&l, (0, 86_400_000), 5 * H, 100).is_none());
        assert!(calendar_bounds(&l, (0, 365 * 86_400_000), H, 100).is_none());
        // Increasing, first at or before `from`, last at or after `to`.
        for bucket in [H, 2 * H, 3 * H, 12 * H, 24 * H, 2 * 24 * H, 14 * 24 * H] {
            let (f, t) = (at("2026-03-20T07:30"), at("2026-11-02T05:00"));
            let b = calendar_bounds(&l, (f, t), bucket, 100_000).unwrap();
            assert!(b.windows(2).all(|w| w[0] < w[1]), "{bucket}");
            assert!(
                b[0] <= f && f < b[1] && b[b.len() - 2] < t && t <= b[b.len() - 1],
                "{bucket}"
            );
        }
    }
}
