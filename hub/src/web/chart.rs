//! Server-rendered SVG charts of one series: one point per bucket, suppressed buckets drawn
//! as hollow markers on the axis (never as a number), every point carrying its data in
//! `data-*` attributes and a `<title>`, and a link that zooms into its bucket. The time axis
//! is in local time with ticks on round local hours, days, months or years, chosen for the
//! period so that no two ticks read the same. Pure.

use jiff::civil::{Date, DateTime};
use maud::{Markup, html};

use super::i18n::Locale;

pub const WIDTH: f64 = 900.0;
pub const HEIGHT: f64 = 270.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 44.0;
/// The most ticks the time axis has.
const MAX_TICKS: i64 = 8;

/// One point to draw.
#[derive(Debug, Clone)]
pub struct ChartPoint {
    pub start_ms: i64,
    /// The bucket's end (buckets of a local calendar differ in length).
    pub end_ms: i64,
    /// What is drawn, in the unit of the axis. `None`: every window of the bucket was
    /// suppressed (or not measured).
    pub value: Option<f64>,
    /// The sum of the published values of the bucket, as stored (`data-sum`).
    pub sum: Option<i64>,
    pub windows: u64,
    pub suppressed: u64,
    pub k: u64,
}

/// How the values of a chart read.
pub struct Scale<'a> {
    /// The y axis' title.
    pub label: &'a str,
    /// A value as people read it (`12,5 %`, `1,4`).
    pub format: &'a dyn Fn(f64) -> String,
    /// The largest value the axis may need (100 for a percentage), if bounded.
    pub cap: Option<f64>,
}

/// A "nice" upper bound for the y axis: 1, 2 or 5 times a power of ten.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

/// A value for a `data-` attribute: a plain number, `.` as decimal mark, 4 decimals at most.
fn machine(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

/// A step of the time axis.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// A fixed part of a day, in milliseconds.
    Clock(i64),
    Days(i64),
    Months(i32),
    Years(i16),
}

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

const STEPS: [Step; 22] = [
    Step::Clock(10_000),
    Step::Clock(30_000),
    Step::Clock(MIN),
    Step::Clock(5 * MIN),
    Step::Clock(10 * MIN),
    Step::Clock(15 * MIN),
    Step::Clock(30 * MIN),
    Step::Clock(HOUR),
    Step::Clock(2 * HOUR),
    Step::Clock(3 * HOUR),
    Step::Clock(6 * HOUR),
    Step::Clock(12 * HOUR),
    Step::Days(1),
    Step::Days(2),
    Step::Days(7),
    Step::Months(1),
    Step::Months(2),
    Step::Months(3),
    Step::Months(6),
    Step::Years(1),
    Step::Years(5),
    Step::Years(10),
];

impl Step {
    fn approx_ms(self) -> i64 {
        match self {
            Step::Clock(ms) => ms,
            Step::Days(d) => d * DAY,
            Step::Months(m) => i64::from(m) * 30 * DAY,
            Step::Years(y) => i64::from(y) * 365 * DAY,
        }
    }
}

/// A tick of the time axis: where, and its label on one or two lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    pub ms: i64,
    pub label: String,
    pub sub: Option<String>,
}

/// The ticks of `[from, to)` in the locale's time zone: round local times (every 6 h, on
/// midnight and noon...), days, Mondays, first days of months, or years.
pub fn ticks(l: &Locale, from: i64, to: i64) -> Vec<Tick> {
    let span = (to - from).max(1);
    let step = STEPS
        .iter()
        .copied()
        .find(|s| span / s.approx_ms() < MAX_TICKS)
        .unwrap_or(Step::Years(100));
    let Some(start) = l.zoned(from) else {
        return Vec::new();
    };
    let day0: Date = start.date();
    // Civil times from a round start before `from`, then kept when in the period.
    let first: DateTime = match step {
        Step::Clock(_) | Step::Days(1) | Step::Days(2) => {
            day0.to_datetime(jiff::civil::Time::midnight())
        }
        Step::Days(_) => {
            let back = i64::from(day0.weekday().to_monday_zero_offset());
            day0.checked_sub(jiff::Span::new().days(back))
                .unwrap_or(day0)
                .to_datetime(jiff::civil::Time::midnight())
        }
        Step::Months(m) => {
            let month = (i32::from(day0.month()) - 1) / m * m + 1;
            Date::new(day0.year(), month as i8, 1)
                .unwrap_or(day0)
                .to_datetime(jiff::civil::Time::midnight())
        }
        Step::Years(y) => Date::new(day0.year() / y * y, 1, 1)
            .unwrap_or(day0)
            .to_datetime(jiff::civil::Time::midnight()),
    };
    let mut out: Vec<Tick> = Vec::new();
    let mut prev_day: Option<Date> = None;
    for i in 0..2000i64 {
        let span = match step {
            Step::Clock(ms) => jiff::Span::new().milliseconds(ms * i),
            Step::Days(d) => jiff::Span::new().days(d * i),
            Step::Months(m) => jiff::Span::new().months(i64::from(m) * i),
            Step::Years(y) => jiff::Span::new().years(i64::from(y) * i),
        };
        let Ok(civil) = first.checked_add(span) else {
            break;
        };
        let Ok(ts) = l.tz().to_timestamp(civil) else {
            break;
        };
        let ms = ts.as_millisecond();
        if ms >= to {
            break;
        }
        if ms < from {
            continue;
        }
        let (label, sub) = match step {
            Step::Clock(s) => {
                let time = if s < MIN {
                    format!(
                        "{:02}:{:02}:{:02}",
                        civil.hour(),
                        civil.minute(),
                        civil.second()
                    )
                } else {
                    l.time(ms)
                };
                // The date under every tick from 3 h on, else under the first tick of a day.
                let date =
                    (s >= 3 * HOUR || prev_day != Some(civil.date())).then(|| l.day_month(ms));
                (time, date)
            }
            Step::Days(_) => {
                let year = (out.is_empty() || (civil.month() == 1 && civil.day() <= 7))
                    .then(|| civil.year().to_string());
                (l.day_month(ms), year)
            }
            Step::Months(m) => {
                let year = (m >= 3 || out.is_empty() || civil.month() <= m as i8)
                    .then(|| civil.year().to_string());
                (
                    l.month_year(ms).split(' ').next().unwrap_or("").to_owned(),
                    year,
                )
            }
            Step::Years(_) => (civil.year().to_string(), None),
        };
        prev_day = Some(civil.date());
        out.push(Tick { ms, label, sub });
    }
    out
}

/// The chart. `zoom(start, end)` gives the link of a bucket (None: no link).
pub fn render(
    l: &Locale,
    id: &str,
    points: &[ChartPoint],
    (from, to): (i64, i64),
    bucket_ms: i64,
    scale: &Scale,
    zoom: &dyn Fn(i64, i64) -> Option<String>,
) -> Markup {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let span = (to - from).max(1) as f64;
    let x = |ms: i64| LEFT + ((ms - from) as f64 / span) * plot_w;
    let max = points.iter().filter_map(|p| p.value).fold(0.0f64, f64::max);
    let ymax = match scale.cap {
        Some(c) => nice_max(max).min(c),
        None => nice_max(max),
    };
    let y = |v: f64| TOP + plot_h - (v / ymax) * plot_h;
    // Consecutive buckets are joined; a missing bucket breaks the line.
    let mut lines: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev: Option<i64> = None;
    for p in points {
        let Some(v) = p.value else {
            if !current.is_empty() {
                lines.push(std::mem::take(&mut current));
            }
            prev = None;
            continue;
        };
        // A gap: the previous bucket did not end where this one starts.
        if prev.is_some_and(|end| p.start_ms > end) && !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        let cx = x(p.start_ms + (p.end_ms - p.start_ms) / 2);
        current.push_str(&format!("{cx:.1},{:.1} ", y(v)));
        prev = Some(p.end_ms);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    let ticks_y: Vec<f64> = (0..=4).map(|i| ymax * i as f64 / 4.0).collect();
    let ticks_x = ticks(l, from, to);
    let windows = |n: u64| match l.lang {
        super::i18n::Lang::Fr => format!("{n} fenêtre{}", if n > 1 { "s" } else { "" }),
        super::i18n::Lang::En => format!("{n} window{}", if n > 1 { "s" } else { "" }),
    };
    html! {
        svg.chart id=(id) xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            role="img" aria-label=(format!("{} ; {} {}", scale.label, points.len(), l.t("points (tableau des données ci-dessous)", "points (data table below)")))
            data-from=(from) data-to=(to) data-bucket-ms=(bucket_ms) {
            rect.plot x=(LEFT) y=(TOP) width=(plot_w) height=(plot_h) {}
            @for t in &ticks_y {
                line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{:.1}", y(*t))) y2=(format!("{:.1}", y(*t))) {}
                text.ylab x=(LEFT - 6.0) y=(format!("{:.1}", y(*t) + 4.0)) text-anchor="end" { ((scale.format)(*t)) }
            }
            @for t in &ticks_x {
                @let tx = format!("{:.1}", x(t.ms));
                line.tick x1=(tx) x2=(tx) y1=(TOP + plot_h) y2=(TOP + plot_h + 4.0) {}
                text.xlab x=(tx) y=(HEIGHT - BOTTOM + 17.0) text-anchor="middle" data-ms=(t.ms) {
                    (t.label)
                    @if let Some(s) = &t.sub { tspan x=(tx) dy="14" { (s) } }
                }
            }
            text.axis x="14" y=(TOP + plot_h / 2.0) transform=(format!("rotate(-90 14 {})", TOP + plot_h / 2.0)) text-anchor="middle" { (scale.label) }
            @for line in &lines {
                polyline.line points=(line.trim_end()) {}
            }
            @for p in points {
                @let cx = format!("{:.1}", x(p.start_ms + (p.end_ms - p.start_ms) / 2));
                @let when = l.datetime(p.start_ms);
                @let title = match p.value {
                    Some(v) if p.suppressed > 0 => format!("{when} : {} ({}, {} {} < {})", (scale.format)(v), windows(p.windows), p.suppressed, l.t("masquées", "hidden"), p.k),
                    Some(v) => format!("{when} : {} ({})", (scale.format)(v), windows(p.windows)),
                    None => format!("{when} : {} ({})", l.t("masqué (petits nombres)", "hidden (small numbers)"), windows(p.windows)),
                };
                @let value_attr = p.value.map(machine).unwrap_or_else(|| format!("< {}", p.k));
                @let dot = html! {
                    @match p.value {
                        Some(v) => {
                            circle.point cx=(cx) cy=(format!("{:.1}", y(v))) r="3"
                                data-start=(p.start_ms) data-value=(value_attr) data-sum=[p.sum]
                                data-windows=(p.windows) data-suppressed=(p.suppressed) {
                                title { (title) }
                            }
                        }
                        None => {
                            circle.point.suppressed cx=(cx) cy=(format!("{:.1}", TOP + plot_h)) r="4"
                                data-start=(p.start_ms) data-value=(value_attr)
                                data-windows=(p.windows) data-suppressed=(p.suppressed) {
                                title { (title) }
                            }
                        }
                    }
                };
                // The table under the chart carries the same links for the keyboard.
                @match zoom(p.start_ms, p.end_ms) {
                    Some(href) => a href=(href) tabindex="-1" { (dot) },
                    None => (dot),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::i18n::Lang;

    #[test]
    fn nice_bounds() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(450.0), 500.0);
        assert_eq!(nice_max(f64::NAN), 1.0);
    }

    #[test]
    fn draws_one_marker_per_bucket_and_never_a_number_for_suppressed() {
        let pts = vec![
            ChartPoint {
                start_ms: 0,
                end_ms: 3_600_000,
                value: Some(10.0),
                sum: Some(10),
                windows: 4,
                suppressed: 0,
                k: 3,
            },
            ChartPoint {
                start_ms: 3_600_000,
                end_ms: 7_200_000,
                value: None,
                sum: None,
                windows: 4,
                suppressed: 4,
                k: 3,
            },
        ];
        let l = Locale::new(Lang::Fr, crate::web::i18n::Zone::utc());
        let fmt = |v: f64| l.number(v, 1);
        let scale = Scale {
            label: "total",
            format: &fmt,
            cap: None,
        };
        let svg = render(&l, "c", &pts, (0, 7_200_000), 3_600_000, &scale, &|_, _| {
            None
        })
        .into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(r#"data-value="10""#));
        assert!(svg.contains(r#"data-value="&lt; 3""#), "{svg}");
        assert!(svg.contains("masqué (petits nombres)"));
    }

    fn labels(l: &Locale, from: &str, to: &str) -> Vec<String> {
        let p = |s: &str| crate::dates::parse(s).unwrap();
        ticks(l, p(from), p(to))
            .into_iter()
            .map(|t| match t.sub {
                Some(s) => format!("{} {s}", t.label),
                None => t.label,
            })
            .collect()
    }

    #[test]
    fn every_zoom_has_distinct_meaningful_ticks() {
        let l = Locale::new(
            Lang::Fr,
            crate::web::i18n::time_zone("Europe/Paris").unwrap(),
        );
        // Issue 21: a short period gave six identical labels. An hour: every 10 minutes.
        let hour = labels(&l, "2026-12-06T13:00:00Z", "2026-12-06T14:00:00Z");
        assert_eq!(
            hour,
            ["14:00 6 déc.", "14:10", "14:20", "14:30", "14:40", "14:50"]
        );
        // Two minutes of 10-second windows: every 30 s.
        let two = labels(&l, "2026-12-06T13:00:00Z", "2026-12-06T13:02:00Z");
        assert_eq!(
            two[..2],
            ["14:00:00 6 déc.".to_owned(), "14:00:30".to_owned()]
        );
        // A day: hours, local (UTC+1 in winter), with their date.
        let day = labels(&l, "2026-12-05T23:00:00Z", "2026-12-06T23:00:00Z");
        assert_eq!(
            day,
            [
                "00:00 6 déc.",
                "06:00 6 déc.",
                "12:00 6 déc.",
                "18:00 6 déc."
            ]
        );
        // A year: months, with the year on the first and on January (local midnight on
        // 1 January 2027 is 23:00 UTC, inside the period).
        let year = labels(&l, "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z");
        assert_eq!(
            year,
            ["mars 2026", "mai", "juil.", "sept.", "nov.", "janv. 2027"]
        );
        // A month: Mondays.
        let month = labels(&l, "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z");
        assert_eq!(month[0], "2 nov. 2026");
        for (from, to) in [
            ("2026-03-28T00:00:00Z", "2026-03-30T00:00:00Z"),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:20Z"),
            ("2026-01-01T00:00:00Z", "2031-01-01T00:00:00Z"),
            ("2026-10-20T00:00:00Z", "2026-11-20T00:00:00Z"),
        ] {
            let t = labels(&l, from, to);
            assert!(t.len() >= 2 && t.len() <= 8, "{from}: {t:?}");
            let mut u = t.clone();
            u.sort();
            u.dedup();
            assert_eq!(u.len(), t.len(), "distinct: {t:?}");
        }
        assert!(ticks(&l, i64::MAX - 10, i64::MAX).len() <= 8);
    }
}
