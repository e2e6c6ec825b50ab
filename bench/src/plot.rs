//! Charts, as PNG and SVG, drawn headless with plotters and a bundled font
//! (DejaVu Sans from the `dejavu` crate, rasterised by ab_glyph: no
//! fontconfig or system fonts needed).
//!
//! - [`percentile_chart`]: latency against percentile, the percentile axis
//!   log-scaled as 1/(1-q) (0%, 90%, 99%, 99.9%, ...), every stack on one
//!   chart, as HdrHistogram's plotter draws it. The latency axis is
//!   logarithmic too, so stacks an order of magnitude apart stay readable.
//! - [`load_chart`]: latency (p50 and p99) against achieved throughput for
//!   the RATE runs of each stack.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

/// One stack's curve.
#[derive(Debug, Clone)]
pub struct Curve {
    pub name: String,
    /// (quantile < 1, latency ns), quantiles ascending.
    pub points: Vec<(f64, u64)>,
}

/// One stack's latency-vs-load points: (achieved ops/s, p50 ns, p99 ns).
#[derive(Debug, Clone)]
pub struct LoadCurve {
    pub name: String,
    pub points: Vec<(f64, u64, u64)>,
}

const W: u32 = 1200;
const H: u32 = 720;
const FONT: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .unwrap_or_else(|_| panic!("bundled DejaVu Sans is a valid font"));
        plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            .unwrap_or_else(|_| panic!("bundled DejaVu Sans Bold is a valid font"));
    });
}

/// The colour of a stack, the same in every chart.
pub fn stack_color(name: &str, index: usize) -> RGBColor {
    match name {
        "kernel-default" => RGBColor(31, 119, 180),
        "kernel-spin" => RGBColor(255, 127, 14),
        "floor" => RGBColor(100, 100, 100),
        "xstack" => RGBColor(214, 39, 40),
        _ => [RGBColor(44, 160, 44), RGBColor(148, 103, 189), RGBColor(140, 86, 75)][index % 3],
    }
}

/// x position of quantile q: log10(1 / (1 - q)).
pub fn quantile_x(q: f64) -> f64 {
    (1.0 / (1.0 - q.min(1.0 - 1e-9))).log10()
}

/// The label of an integer x position: 0%, 90%, 99%, 99.9%, ...
pub fn percentile_label(x: f64) -> String {
    if (x - x.round()).abs() > 1e-6 || x < -1e-6 {
        return String::new();
    }
    match x.round() as usize {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        k => format!("99.{}%", "9".repeat(k - 2)),
    }
}

fn err<E: std::fmt::Debug>(e: E) -> io::Error {
    io::Error::other(format!("plotting: {e:?}"))
}

/// A latency tick label in microseconds: "0.5", "20", "1500", "2.5e6".
fn fmt_us(v: f64) -> String {
    if v >= 1e6 {
        format!("{v:.1e}")
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn y_range(lo_ns: u64, hi_ns: u64) -> std::ops::Range<f64> {
    let lo = (lo_ns.max(1) as f64 / 1000.0) * 0.6;
    let hi = (hi_ns.max(lo_ns + 1) as f64 / 1000.0) * 1.25;
    lo..hi.max(lo * 2.0)
}

fn draw_percentiles<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, curves: &[Curve]) -> io::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let max_x = pts.clone().map(|p| quantile_x(p.0)).fold(2.0f64, f64::max).ceil();
    let lo = pts.clone().map(|p| p.1).min().unwrap_or(1);
    let hi = pts.map(|p| p.1).max().unwrap_or(1000);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .margin_right(50)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x, y_range(lo, hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(max_x as usize + 1)
        .x_label_formatter(&|v| percentile_label(*v))
        .y_label_formatter(&|v| fmt_us(*v))
        .x_desc("percentile")
        .y_desc("latency (us, log scale)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let color = stack_color(&c.name, i);
        chart
            .draw_series(LineSeries::new(
                c.points.iter().map(|&(q, v)| (quantile_x(q), v as f64 / 1000.0)),
                color.stroke_width(3),
            ))
            .map_err(err)?
            .label(c.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 18))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn draw_load<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, curves: &[LoadCurve]) -> io::Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err)?;
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let max_x = pts.clone().map(|p| p.0).fold(1.0f64, f64::max) * 1.1;
    let lo = pts.clone().map(|p| p.1).min().unwrap_or(1);
    let hi = pts.map(|p| p.2).max().unwrap_or(1000);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 26))
        .margin(20)
        .margin_right(50)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..max_x, y_range(lo, hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|v| if *v >= 1000.0 { format!("{}k", v / 1000.0) } else { format!("{v}") })
        .y_label_formatter(&|v| fmt_us(*v))
        .x_desc("achieved throughput (requests/s)")
        .y_desc("latency (us, log scale, coordinated-omission corrected)")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let color = stack_color(&c.name, i);
        let p50: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.1 as f64 / 1000.0)).collect();
        let p99: Vec<(f64, f64)> = c.points.iter().map(|p| (p.0, p.2 as f64 / 1000.0)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(3)))
            .map_err(err)?
            .label(format!("{} p50", c.name))
            .legend(move |(x, y)| Circle::new((x + 12, y), 5, color.filled()));
        chart.draw_series(p50.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(err)?;
        chart
            .draw_series(LineSeries::new(p99.clone(), color.mix(0.6).stroke_width(2)))
            .map_err(err)?
            .label(format!("{} p99", c.name))
            .legend(move |(x, y)| TriangleMarker::new((x + 12, y), 6, color.filled()));
        chart.draw_series(p99.iter().map(|&p| TriangleMarker::new(p, 6, color.filled()))).map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 18))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// `base` plus `.ext` (keeping any dots already in the name).
fn with_suffix(base: &Path, ext: &str) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Draws the percentile chart to `<base>.png` and `<base>.svg`.
pub fn percentile_chart(base: &Path, title: &str, curves: &[Curve]) -> io::Result<(PathBuf, PathBuf)> {
    register_font();
    let (png, svg) = (with_suffix(base, "png"), with_suffix(base, "svg"));
    draw_percentiles(BitMapBackend::new(&png, (W, H)).into_drawing_area(), title, curves)?;
    draw_percentiles(SVGBackend::new(&svg, (W, H)).into_drawing_area(), title, curves)?;
    Ok((png, svg))
}

/// Draws the latency-vs-load chart to `<base>.png` and `<base>.svg`.
pub fn load_chart(base: &Path, title: &str, curves: &[LoadCurve]) -> io::Result<(PathBuf, PathBuf)> {
    register_font();
    let (png, svg) = (with_suffix(base, "png"), with_suffix(base, "svg"));
    draw_load(BitMapBackend::new(&png, (W, H)).into_drawing_area(), title, curves)?;
    draw_load(SVGBackend::new(&svg, (W, H)).into_drawing_area(), title, curves)?;
    Ok((png, svg))
}

/// Checks that `path` is a PNG of plausible size (signature, IHDR) or an
/// SVG document; returns (width, height) for PNGs, (0, 0) for SVGs.
pub fn validate_image(path: &Path) -> io::Result<(u32, u32)> {
    let data = std::fs::read(path)?;
    let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {m}", path.display()));
    match path.extension().and_then(|e| e.to_str()) {
        Some("png") => {
            if data.len() < 33 || &data[..8] != b"\x89PNG\r\n\x1a\n" || &data[12..16] != b"IHDR" {
                return Err(bad("not a PNG"));
            }
            let w = u32::from_be_bytes(data[16..20].try_into().expect("4 bytes"));
            let h = u32::from_be_bytes(data[20..24].try_into().expect("4 bytes"));
            if w == 0 || h == 0 || !data.ends_with(b"IEND\xaeB`\x82") {
                return Err(bad("truncated PNG"));
            }
            Ok((w, h))
        }
        Some("svg") => {
            let s = std::str::from_utf8(&data).map_err(|_| bad("SVG is not UTF-8"))?;
            if !s.trim_start().starts_with("<svg") || !s.trim_end().ends_with("</svg>") {
                return Err(bad("not an SVG document"));
            }
            Ok((0, 0))
        }
        _ => Err(bad("unknown image type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{distribution_points, new_hist};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xstack-bench-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn percentile_axis_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
        assert_eq!(percentile_label(2.5), "");
        assert!((quantile_x(0.99) - 2.0).abs() < 1e-9);
        assert!((quantile_x(0.0)).abs() < 1e-12);
        assert!(quantile_x(1.0).is_finite());
    }

    #[test]
    fn charts_are_valid_png_and_svg() {
        let dir = tmpdir("charts");
        let mut curves = Vec::new();
        for (name, base) in [("kernel-default", 54_000u64), ("kernel-spin", 8_000), ("floor", 3_500)] {
            let mut h = new_hist();
            for i in 0..20_000u64 {
                h.record(base + (i * 7919) % (base / 2) + if i % 1000 == 0 { base * 10 } else { 0 }).unwrap();
            }
            curves.push(Curve { name: name.into(), points: distribution_points(&h) });
        }
        let (png, svg) = percentile_chart(&dir.join("rr"), "RR 64 B: latency by percentile", &curves).unwrap();
        assert_eq!(validate_image(&png).unwrap(), (W, H));
        validate_image(&svg).unwrap();
        let svg_text = std::fs::read_to_string(&svg).unwrap();
        assert!(svg_text.contains("kernel-spin") && svg_text.contains("99.9%"));

        let load = vec![
            LoadCurve { name: "kernel-default".into(), points: vec![(1e4, 50_000, 90_000), (3e4, 60_000, 200_000)] },
            LoadCurve { name: "kernel-spin".into(), points: vec![(1e4, 9_000, 20_000), (3e4, 9_500, 30_000)] },
        ];
        let (png, svg) = load_chart(&dir.join("load"), "RATE: latency vs load", &load).unwrap();
        assert_eq!(validate_image(&png).unwrap(), (W, H));
        validate_image(&svg).unwrap();
        // Empty input still gives a valid (empty) chart.
        let (png, _) = percentile_chart(&dir.join("empty"), "empty", &[]).unwrap();
        validate_image(&png).unwrap();
        std::fs::write(dir.join("bad.png"), b"GIF89a").unwrap();
        assert!(validate_image(&dir.join("bad.png")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
