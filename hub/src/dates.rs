//! Dates for the web side: parsing the RFC 3339 labels of records and the `from`/`to` of
//! queries, formatting milliseconds back (UTC), and durations in words. Local time, in the
//! hub's time zone, is [`crate::web::i18n::Locale`]'s. Pure.

/// A number of ASCII digits only (no sign, no space, not empty).
fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A calendar day `YYYY-MM-DD`, strictly.
pub fn parse_day(s: &str) -> Option<jiff::civil::Date> {
    let mut dp = s.split('-');
    let (y, m, d) = (dp.next()?, dp.next()?, dp.next()?);
    if dp.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    jiff::civil::Date::new(num(y)?, num(m)?, num(d)?).ok()
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` or with `.mmm`, optionally
/// ending in `Z` (always UTC), into Unix milliseconds.
///
/// The fields are cut here, strictly (jiff's own parser also takes signed years, other
/// fractions and folds leap seconds in); jiff checks the calendar and does the arithmetic.
pub fn parse(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date = parse_day(date)?;
    let time = match time {
        None => jiff::civil::Time::midnight(),
        Some(t) => {
            let (hms, ms) = match t.split_once('.') {
                Some((a, f)) if f.len() == 3 => (a, num::<i32>(f)?),
                Some(_) => return None,
                None => (t, 0),
            };
            let mut tp = hms.split(':');
            let (h, mi) = (num(tp.next()?)?, num(tp.next()?)?);
            let sec = match tp.next() {
                Some(x) => num(x)?,
                None => 0,
            };
            if tp.next().is_some() {
                return None;
            }
            jiff::civil::Time::new(h, mi, sec, ms * 1_000_000).ok()?
        }
    };
    const EPOCH: jiff::civil::DateTime = jiff::civil::datetime(1970, 1, 1, 0, 0, 0, 0);
    i64::try_from(date.to_datetime(time).duration_since(EPOCH).as_millis()).ok()
}

/// `2026-11-30T11:35:00Z` (seconds precision; what people and CSV readers want).
pub fn format(ms: i64) -> String {
    let full = aggregate::window::rfc3339(ms);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` -> drop the milliseconds when they are zero.
    match full.strip_suffix(".000Z") {
        Some(s) => format!("{s}Z"),
        None => full,
    }
}

/// `2026-11-30` for date inputs.
pub fn day(ms: i64) -> String {
    aggregate::window::rfc3339(ms)[..10].to_owned()
}

/// A duration for people: `15 min`, `6 h`, `1 day`, `7 days`.
pub fn human_duration(ms: i64) -> String {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    if ms % DAY == 0 {
        let d = ms / DAY;
        return if d == 1 {
            "1 day".into()
        } else {
            format!("{d} days")
        };
    }
    if ms % HOUR == 0 {
        return format!("{} h", ms / HOUR);
    }
    if ms % MIN == 0 {
        return format!("{} min", ms / MIN);
    }
    format!("{} s", ms as f64 / 1000.0)
}

/// A duration in plain French, two units at most: `3 j 4 h`, `4 h 12 min`, `12 min`, `45 s`.
pub fn duree(secs: u64) -> String {
    two_units(secs, "j")
}

/// The same in English: `3 d 4 h`, `4 h 12 min`.
pub fn duration_en(secs: u64) -> String {
    two_units(secs, "d")
}

fn two_units(secs: u64, day: &str) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} {day}"),
        (d, h, _) => format!("{d} {day} {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        for ms in [
            0,
            1_796_038_500_000,
            951_782_400_000,
            -86_400_000,
            4_102_444_799_000,
        ] {
            assert_eq!(parse(&aggregate::window::rfc3339(ms)), Some(ms), "{ms}");
            assert_eq!(parse(&format(ms)), Some(ms));
        }
        let day = parse("2026-11-30").unwrap();
        assert_eq!(aggregate::window::rfc3339(day), "2026-11-30T00:00:00.000Z");
        assert_eq!(parse("2026-11-30T11:35:00.000Z"), Some(day + 41_700_000));
        assert_eq!(parse("2024-02-29T00:00"), parse("2024-02-29"));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2025-02-29",
            "2026-1-01",
            "2026-01-01T24:00",
            "2026-01-01T10:60",
            "2026-01-01T10:00:00.5Z",
            "2026-01-01T10:00:00:00",
            "+026-01-01",
            "2026-01-01Tab:cd",
            "２０２６-01-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(900_000), "15 min");
        assert_eq!(human_duration(3_600_000), "1 h");
        assert_eq!(human_duration(86_400_000), "1 day");
        assert_eq!(human_duration(7 * 86_400_000), "7 days");
    }

    #[test]
    fn french_durations() {
        assert_eq!(duree(0), "0 s");
        assert_eq!(duree(45), "45 s");
        assert_eq!(duree(12 * 60 + 5), "12 min");
        assert_eq!(duree(3_600), "1 h");
        assert_eq!(duree(4 * 3_600 + 12 * 60), "4 h 12 min");
        assert_eq!(duree(3 * 86_400 + 4 * 3_600 + 59), "3 j 4 h");
        assert_eq!(duree(2 * 86_400 + 30), "2 j");
        assert!(!duree(u64::MAX).is_empty());
        assert_eq!(duration_en(3 * 86_400 + 4 * 3_600 + 59), "3 d 4 h");
    }
}
