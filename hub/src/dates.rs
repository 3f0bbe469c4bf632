//! Dates for the web side: parsing the RFC 3339 labels of records and the `from`/`to` of
//! queries, formatting milliseconds back (UTC), and the civil time of metropolitan France with
//! French wording for the device-health parts read by local authorities. Pure.

/// A number of ASCII digits only (no sign, no space, not empty).
fn num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
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
    let mut dp = date.split('-');
    let (y, m, d) = (dp.next()?, dp.next()?, dp.next()?);
    if dp.next().is_some() || y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let date = jiff::civil::Date::new(num(y)?, num(m)?, num(d)?).ok()?;
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

/// `2026-11-30 11:35` for tables.
pub fn short(ms: i64) -> String {
    let f = aggregate::window::rfc3339(ms);
    format!("{} {}", &f[..10], &f[11..16])
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

const HOUR_MS: i64 = 3_600_000;

/// The UTC offset of Paris (metropolitan France) at `ms`: +1 h, +2 h in summer time.
///
/// The EU rule in force since 1996 (directive 2000/84/EC): summer time from the last Sunday of
/// March to the last Sunday of October, changing at 01:00 UTC. Written out here because the
/// workspace builds jiff without a time zone database (`Cargo.toml`); overseas territories are
/// not covered.
pub fn paris_offset_ms(ms: i64) -> i64 {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return HOUR_MS;
    };
    let year = jiff::tz::Offset::UTC.to_datetime(ts).year();
    let change = |month: i8| -> Option<i64> {
        let sunday = jiff::civil::Date::new(year, month, 1)
            .ok()?
            .nth_weekday_of_month(-1, jiff::civil::Weekday::Sunday)
            .ok()?;
        let at = sunday.to_datetime(jiff::civil::Time::new(1, 0, 0, 0).ok()?);
        Some(
            jiff::tz::Offset::UTC
                .to_timestamp(at)
                .ok()?
                .as_millisecond(),
        )
    };
    match (change(3), change(10)) {
        (Some(start), Some(end)) if (start..end).contains(&ms) => 2 * HOUR_MS,
        _ => HOUR_MS,
    }
}

/// Paris civil time at `ms` (`None` outside jiff's range).
fn paris(ms: i64) -> Option<jiff::civil::DateTime> {
    let local = ms.checked_add(paris_offset_ms(ms))?;
    let ts = jiff::Timestamp::from_millisecond(local).ok()?;
    Some(jiff::tz::Offset::UTC.to_datetime(ts))
}

const MOIS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];

fn jour_mois(d: jiff::civil::DateTime) -> String {
    let day = match d.day() {
        1 => "1er".to_owned(),
        n => n.to_string(),
    };
    let month = MOIS
        .get(usize::try_from(d.month() - 1).unwrap_or(0))
        .copied()
        .unwrap_or("");
    format!("{day} {month}")
}

fn heure_de(d: jiff::civil::DateTime) -> String {
    format!("{} h {:02}", d.hour(), d.minute())
}

/// Paris time in French: `5 mars 2026 à 14 h 05`.
pub fn date_heure(ms: i64) -> String {
    match paris(ms) {
        Some(d) => format!("{} {} à {}", jour_mois(d), d.year(), heure_de(d)),
        None => format(ms),
    }
}

/// When something started, in Paris time, as short as `now_ms` allows: `14 h 05` the same day,
/// `le 3 mars à 14 h 05` the same year, `le 3 mars 2025 à 14 h 05` otherwise (to follow
/// "depuis").
pub fn depuis(ms: i64, now_ms: i64) -> String {
    match (paris(ms), paris(now_ms)) {
        (Some(d), Some(n)) if d.date() == n.date() => heure_de(d),
        (Some(d), Some(n)) if d.year() == n.year() => {
            format!("le {} à {}", jour_mois(d), heure_de(d))
        }
        (Some(d), _) => format!("le {} {} à {}", jour_mois(d), d.year(), heure_de(d)),
        _ => format(ms),
    }
}

/// A duration in plain French, two units at most: `3 j 4 h`, `4 h 12 min`, `12 min`, `45 s`.
pub fn duree(secs: u64) -> String {
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
        (d, 0, _) => format!("{d} j"),
        (d, h, _) => format!("{d} j {h} h"),
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
        assert_eq!(short(0), "1970-01-01 00:00");
    }

    #[test]
    fn paris_time_follows_the_eu_summer_time_rule() {
        let at = |s: &str| parse(s).unwrap();
        // 2026: summer time from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(paris_offset_ms(at("2026-03-29T00:59:59")), HOUR_MS);
        assert_eq!(paris_offset_ms(at("2026-03-29T01:00")), 2 * HOUR_MS);
        assert_eq!(paris_offset_ms(at("2026-10-25T00:59:59")), 2 * HOUR_MS);
        assert_eq!(paris_offset_ms(at("2026-10-25T01:00")), HOUR_MS);
        assert_eq!(paris_offset_ms(at("2026-01-15T12:00")), HOUR_MS);
        assert_eq!(date_heure(at("2026-03-01T00:00")), "1er mars 2026 à 1 h 00");
        assert_eq!(
            date_heure(at("2026-07-14T12:05")),
            "14 juillet 2026 à 14 h 05"
        );
        assert_eq!(
            date_heure(at("2026-12-31T23:30")),
            "1er janvier 2027 à 0 h 30"
        );
        let now = at("2026-07-14T20:00");
        assert_eq!(depuis(at("2026-07-14T12:05"), now), "14 h 05");
        assert_eq!(
            depuis(at("2026-07-13T12:05"), now),
            "le 13 juillet à 14 h 05"
        );
        assert_eq!(
            depuis(at("2025-12-01T08:00"), now),
            "le 1er décembre 2025 à 9 h 00"
        );
        // Out of range: no panic, a UTC label.
        assert!(!date_heure(i64::MAX).is_empty());
        assert!(!depuis(i64::MIN, 0).is_empty());
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
    }
}
