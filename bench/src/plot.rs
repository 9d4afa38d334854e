//! The `--out` charts, hand-written SVG: HdrHistogram percentile curves of one group's latency
//! scenarios ([`latency_svg`]), and every same-run ratio against its goal ([`ratio_svg`]).
//!
//! Latency: x = percentile on the usual HDR scale, `log10(1 / (1 - q))` (0 = 0%, 1 = 90%,
//! 2 = 99%, ...); y = latency, log scale; one line per scenario, with a legend.

use std::fmt::Write;

use hdrhistogram::Histogram;

/// One curve: a name and its histogram (ns).
pub struct Series<'a> {
    pub name: &'a str,
    pub hist: &'a Histogram<u64>,
}

const W: f64 = 1240.0;
const H: f64 = 600.0;
const LEFT: f64 = 80.0;
/// The legend sits right of the plot, in this margin.
const RIGHT: f64 = 320.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Twenty colours that tell apart on white (Tableau 10, then darker and lighter kin chosen to
/// differ from it and from each other): a chart of up to twenty curves reuses none.
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    "#000000", "#08306b", "#a50f15", "#00441b", "#7f2704", "#3f007d", "#fdae6b", "#74c476", "#6baed6", "#f768a1",
];

/// Line style of curve `i`: a colour, and past the palette a dash pattern, so that no two of
/// the first 60 curves look alike.
fn style(i: usize) -> (&'static str, &'static str) {
    const DASHES: &[&str] = &["", "8 4", "2 3"];
    (COLORS[i % COLORS.len()], DASHES[(i / COLORS.len()) % DASHES.len()])
}

fn dash_attr(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{d}""#)
    }
}

/// The HDR percentile axis position of quantile `q` (0..1): `log10(1 / (1 - q))`; `q` = 1
/// (the maximum) lands on the last sample's position, `log10(count)`.
pub fn x_of_quantile(q: f64, count: u64) -> f64 {
    let last = (count.max(1) as f64).log10();
    if q >= 1.0 {
        return last;
    }
    (-(1.0 - q).log10()).min(last.max(0.0))
}

/// Label of the percentile axis at `log10(1 / (1 - q))` = `k`: "0%", "90%", "99%", "99.9%"...
pub fn percentile_label(k: u32) -> String {
    match k {
        0 => "0%".into(),
        1 => "90%".into(),
        k => format!("99.{}%", "9".repeat(k as usize - 2)),
    }
    .replace("99.%", "99%")
}

/// `10ns`, `100ns`, `1us`, ..., for a power of ten in ns.
pub fn ns_label(decade: i32) -> String {
    let (unit, shift) = match decade {
        d if d < 3 => ("ns", 0),
        d if d < 6 => ("us", 3),
        d if d < 9 => ("ms", 6),
        _ => ("s", 9),
    };
    format!("{}{unit}", 10u64.pow((decade - shift).max(0) as u32))
}

/// (x, y) points of one curve: x on the percentile axis, y = value in ns.
pub fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let x = x_of_quantile(v.quantile_iterated_to(), h.len());
        let y = (v.value_iterated_to().max(1)) as f64;
        pts.push((x, y));
    }
    pts
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// An SVG document `W` wide and `h` high: white background, `title` centred on top.
fn svg_start(h: f64, title: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    o
}

/// The whole SVG document.
pub fn latency_svg(series: &[Series], title: &str) -> String {
    let curves: Vec<Vec<(f64, f64)>> = series.iter().map(|s| curve(s.hist)).collect();
    let all = curves.iter().flatten();
    let x_data = all.clone().map(|p| p.0).fold(0.0, f64::max);
    let x_max = x_data.ceil().clamp(5.0, 7.0);
    let (lo, hi) = all.fold((f64::MAX, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let y_lo = if lo == f64::MAX { 0 } else { lo.log10().floor() as i32 };
    let y_hi = (hi.log10().ceil() as i32).max(y_lo + 1);
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x.min(x_max) / x_max * pw;
    let sy = |v: f64| TOP + ph - (v.log10() - f64::from(y_lo)) / f64::from(y_hi - y_lo) * ph;

    let mut o = svg_start(H, title);
    // Grid and axes.
    for k in 0..=x_max as u32 {
        let x = sx(f64::from(k));
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            TOP + ph
        );
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + ph + 18.0,
            percentile_label(k)
        );
    }
    for d in y_lo..=y_hi {
        let y = sy(10f64.powi(d));
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>",
            LEFT + pw
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            ns_label(d)
        );
    }
    let _ = writeln!(
        o,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        o,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (log scale)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Curves.
    for (i, pts) in curves.iter().enumerate() {
        let (color, dash) = style(i);
        let points: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y))).collect();
        let _ = writeln!(
            o,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{} points="{}"/>"#,
            dash_attr(dash),
            points.join(" ")
        );
    }
    // Legend, right of the plot.
    let lh = 18.0;
    for (i, s) in series.iter().enumerate() {
        let (color, dash) = style(i);
        let y = TOP + 4.0 + lh * (i as f64 + 0.5);
        let x = LEFT + pw + 16.0;
        let p50 = if s.hist.is_empty() {
            0
        } else {
            s.hist.value_at_quantile(0.5)
        };
        let _ = writeln!(
            o,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"{}/>"#,
            x + 22.0,
            dash_attr(dash)
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">{} (p50 {p50} ns)</text>"#,
            x + 28.0,
            y + 4.0,
            escape(s.name)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// One same-run ratio and the goal it is held to.
pub struct RatioRow {
    /// e.g. `ring.nop p50 / floor.pingpong p50`.
    pub label: String,
    pub value: f64,
    pub bound: f64,
    /// The goal is `value >= bound` (else `value <= bound`).
    pub at_least: bool,
}

impl RatioRow {
    pub fn met(&self) -> bool {
        if self.at_least {
            self.value >= self.bound
        } else {
            self.value <= self.bound
        }
    }
}

/// `ratios.svg`: one row per ratio, on a log scale: the goal as a black tick with its bound,
/// the measured value as a dot (green when the goal is met, red when missed) with its value.
pub fn ratio_svg(rows: &[RatioRow], title: &str) -> String {
    const LABEL_W: f64 = 420.0;
    const ROW_H: f64 = 22.0;
    let h = TOP + BOTTOM + ROW_H * rows.len().max(1) as f64;
    let pw = W - LABEL_W - 140.0;
    let logs = rows
        .iter()
        .flat_map(|r| [r.value, r.bound])
        .filter(|v| *v > 0.0)
        .map(f64::log10);
    let (lo, hi) = logs.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.floor(), hi.ceil().max(lo.floor() + 1.0));
    let sx = |v: f64| LABEL_W + (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * pw;
    let mut o = svg_start(h, title);
    for d in lo as i32..=hi as i32 {
        let x = sx(10f64.powi(d));
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>",
            h - BOTTOM
        );
        let _ = writeln!(
            o,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}x</text>"#,
            h - BOTTOM + 18.0,
            crate::scenarios::short_number(10f64.powi(d))
        );
    }
    let x1 = sx(1.0);
    let _ = writeln!(
        o,
        r##"<line x1="{x1:.1}" y1="{TOP}" x2="{x1:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="4 3"/>"##,
        h - BOTTOM
    );
    let _ = writeln!(
        o,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">ratio (log scale); black tick: goal; dot: measured (green met, red missed)</text>"#,
        LABEL_W + pw / 2.0,
        h - 14.0
    );
    for (i, r) in rows.iter().enumerate() {
        let y = TOP + ROW_H * (i as f64 + 0.5);
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LABEL_W - 10.0,
            y + 4.0,
            escape(&r.label)
        );
        let (bx, vx) = (sx(r.bound), sx(r.value));
        let _ = writeln!(
            o,
            r#"<line x1="{bx:.1}" y1="{:.1}" x2="{bx:.1}" y2="{:.1}" stroke="black" stroke-width="3"/>"#,
            y - 8.0,
            y + 8.0
        );
        let color = if r.met() { "#2ca02c" } else { "#d62728" };
        let _ = writeln!(
            o,
            r#"<line x1="{bx:.1}" y1="{y:.1}" x2="{vx:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/>"#
        );
        let _ = writeln!(o, r#"<circle cx="{vx:.1}" cy="{y:.1}" r="5" fill="{color}"/>"#);
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}">{:.3}x (goal {} {})</text>"#,
            LABEL_W + pw + 12.0,
            y + 4.0,
            r.value,
            if r.at_least { "&gt;=" } else { "&lt;=" },
            crate::scenarios::short_number(r.bound)
        );
    }
    o.push_str("</svg>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(x_of_quantile(0.0, 1000), 0.0));
        assert!(near(x_of_quantile(0.9, 1000), 1.0));
        assert!(near(x_of_quantile(0.999, 1_000_000), 3.0));
        // Beyond the last sample, and the maximum, sit at log10(count).
        assert!(near(x_of_quantile(0.99999, 1000), 3.0));
        assert!(near(x_of_quantile(1.0, 100), 2.0));
        let labels: Vec<String> = (0..=5).map(percentile_label).collect();
        assert_eq!(labels, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]);
        let y: Vec<String> = [1, 2, 3, 5, 6, 9].into_iter().map(ns_label).collect();
        assert_eq!(y, ["10ns", "100ns", "1us", "100us", "1ms", "1s"]);
    }

    #[test]
    fn the_first_thirty_curves_look_different() {
        let styles: Vec<_> = (0..30).map(style).collect();
        for (i, a) in styles.iter().enumerate() {
            assert!(!styles[..i].contains(a), "curve {i} repeats {a:?}");
        }
    }

    #[test]
    fn one_line_per_scenario_with_a_legend() {
        let mut a = crate::stats::new_histogram();
        let mut b = crate::stats::new_histogram();
        for i in 1..=10_000u64 {
            a.record(100 + i % 50).unwrap();
            b.record(20_000 + i).unwrap();
        }
        let svg = latency_svg(
            &[
                Series {
                    name: "ring.nop",
                    hist: &a,
                },
                Series {
                    name: "uds.msgpack",
                    hist: &b,
                },
            ],
            "test <run>",
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">ring.nop (p50 ") && svg.contains(">uds.msgpack (p50 "));
        assert!(svg.contains("test &lt;run&gt;"));
        assert!(svg.contains(">99.999%<") && svg.contains(">100ns<") && svg.contains(">100us<"));
        // Every coordinate is a finite number inside the picture.
        for pts in svg.split("points=\"").skip(1) {
            for p in pts.split('"').next().unwrap().split(' ') {
                let (x, y) = p.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((0.0..=W).contains(&x) && (0.0..=H).contains(&y), "{p}");
            }
        }
        // An empty run still makes a valid picture.
        assert!(latency_svg(&[], "empty").ends_with("</svg>\n"));
    }

    #[test]
    fn no_colour_is_reused_within_twenty_curves() {
        let colours: std::collections::HashSet<_> = (0..20).map(|i| style(i).0).collect();
        assert_eq!(colours.len(), 20);
        assert!(
            (0..20).all(|i| style(i).1.is_empty()),
            "the first twenty curves are solid"
        );
    }

    #[test]
    fn ratio_rows_are_drawn_with_their_verdict() {
        let rows = [
            RatioRow {
                label: "ring.nop p50 / floor.pingpong p50".into(),
                value: 1.2,
                bound: 1.3,
                at_least: false,
            },
            RatioRow {
                label: "a ops/s / b ops/s".into(),
                value: 0.4,
                bound: 0.5,
                at_least: true,
            },
        ];
        assert!(rows[0].met() && !rows[1].met());
        let svg = ratio_svg(&rows, "ratios");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("ring.nop p50 / floor.pingpong p50"));
        assert!(svg.contains("#2ca02c") && svg.contains("#d62728"));
        assert!(svg.contains("1.200x (goal &lt;= 1.3)"));
    }
}
