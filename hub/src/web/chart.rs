//! Server-rendered SVG charts of one series: one point per bucket, suppressed buckets drawn
//! as hollow markers on the axis (never as a number), every point carrying its data in
//! `data-*` attributes and a `<title>`, and a link that zooms into its bucket. Pure.

use maud::{Markup, html};

use crate::dates;

pub const WIDTH: f64 = 900.0;
pub const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 36.0;

/// One point to draw.
#[derive(Debug, Clone)]
pub struct ChartPoint {
    pub start_ms: i64,
    /// `None`: every window of the bucket was suppressed (or not measured).
    pub value: Option<f64>,
    pub windows: u64,
    pub suppressed: u64,
    pub k: u64,
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

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

/// The chart. `zoom(start, end)` gives the link of a bucket (None: no link).
pub fn render(
    id: &str,
    points: &[ChartPoint],
    from: i64,
    to: i64,
    bucket_ms: i64,
    y_label: &str,
    zoom: &dyn Fn(i64, i64) -> Option<String>,
) -> Markup {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let span = (to - from).max(1) as f64;
    let x = |ms: i64| LEFT + ((ms - from) as f64 / span) * plot_w;
    let max = points.iter().filter_map(|p| p.value).fold(0.0f64, f64::max);
    let ymax = nice_max(max);
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
        if prev.is_some_and(|s| p.start_ms - s > bucket_ms) && !current.is_empty() {
            lines.push(std::mem::take(&mut current));
        }
        let cx = x(p.start_ms + bucket_ms / 2);
        current.push_str(&format!("{cx:.1},{:.1} ", y(v)));
        prev = Some(p.start_ms);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    let ticks_y: Vec<f64> = (0..=4).map(|i| ymax * i as f64 / 4.0).collect();
    let ticks_x: Vec<i64> = (0..=5).map(|i| from + ((to - from) / 5) * i).collect();
    let long_span = to - from > 3 * 86_400_000;
    html! {
        svg.chart id=(id) xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            role="img" aria-label=(format!("{y_label}, {} points", points.len()))
            data-from=(from) data-to=(to) data-bucket-ms=(bucket_ms) {
            rect.plot x=(LEFT) y=(TOP) width=(plot_w) height=(plot_h) {}
            @for t in &ticks_y {
                line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(format!("{:.1}", y(*t))) y2=(format!("{:.1}", y(*t))) {}
                text.ylab x=(LEFT - 6.0) y=(format!("{:.1}", y(*t) + 4.0)) text-anchor="end" { (fmt_num(*t)) }
            }
            @for t in &ticks_x {
                text.xlab x=(format!("{:.1}", x(*t))) y=(HEIGHT - BOTTOM + 16.0) text-anchor="middle" {
                    @if long_span { (dates::day(*t)) } @else { (dates::short(*t)) }
                }
            }
            text.axis x="12" y=(TOP + plot_h / 2.0) transform=(format!("rotate(-90 12 {})", TOP + plot_h / 2.0)) text-anchor="middle" { (y_label) }
            @for l in &lines {
                polyline.line points=(l.trim_end()) {}
            }
            @for p in points {
                @let cx = format!("{:.1}", x(p.start_ms + bucket_ms / 2));
                @let title = match p.value {
                    Some(v) if p.suppressed > 0 => format!("{}: {} ({} windows, {} of them < {})", dates::format(p.start_ms), fmt_num(v), p.windows, p.suppressed, p.k),
                    Some(v) => format!("{}: {} ({} windows)", dates::format(p.start_ms), fmt_num(v), p.windows),
                    None => format!("{}: < {} ({} windows, all suppressed)", dates::format(p.start_ms), p.k, p.windows),
                };
                @let value_attr = p.value.map(fmt_num).unwrap_or_else(|| format!("< {}", p.k));
                @let dot = html! {
                    @match p.value {
                        Some(v) => {
                            circle.point cx=(cx) cy=(format!("{:.1}", y(v))) r="3"
                                data-start=(p.start_ms) data-value=(value_attr)
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
                @match zoom(p.start_ms, p.start_ms + bucket_ms) {
                    Some(href) => a href=(href) { (dot) },
                    None => (dot),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                value: Some(10.0),
                windows: 4,
                suppressed: 0,
                k: 3,
            },
            ChartPoint {
                start_ms: 3_600_000,
                value: None,
                windows: 4,
                suppressed: 4,
                k: 3,
            },
        ];
        let svg = render("c", &pts, 0, 7_200_000, 3_600_000, "total", &|_, _| None).into_string();
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains(r#"data-value="10""#));
        assert!(svg.contains(r#"data-value="&lt; 3""#), "{svg}");
        assert!(svg.contains("all suppressed"));
    }
}
