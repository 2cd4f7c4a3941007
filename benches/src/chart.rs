//! SVG charts of kiln-bench's figures, drawn with plotters' SVG backend: grouped horizontal bars
//! (kiln beside what it is compared with) and stacked line panels (training curves). Text is
//! written as SVG `<text>` elements, so no font files or system libraries are needed.

use std::ops::Range;
use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Values spanning more than this factor are drawn on a logarithmic axis.
const LOG_SPAN: f64 = 100.0;
/// Chart width in pixels.
const WIDTH: u32 = 900;
/// The series colours, in order (colour-blind-safe "Dark2").
const PALETTE: [RGBColor; 6] = [
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
    RGBColor(0xa6, 0x76, 0x1d),
];

/// A grouped bar chart: for every group (e.g. "resnet18 train"), one bar per series (e.g. kiln,
/// PyTorch).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// What the values measure, with the unit, e.g. "images/s (higher is better)".
    pub unit: String,
    /// Series names, in bar order within a group.
    pub series: Vec<String>,
    /// Group label and one value per series (`None`: not measured).
    pub groups: Vec<(String, Vec<Option<f64>>)>,
}

/// One named line of a [`LinePanel`].
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

/// One panel of line charts sharing axes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePanel {
    /// Title above the panel.
    pub title: String,
    /// Horizontal axis description.
    pub x_label: String,
    /// Vertical axis description.
    pub y_label: String,
    /// Where the legend goes (where the lines are not expected to be).
    pub legend: SeriesLabelPosition,
    /// The lines.
    pub lines: Vec<Line>,
}

/// A value axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// From 0 to `max`.
    Linear {
        /// The axis end.
        max: f64,
    },
    /// Logarithmic from `min` to `max`, both powers of ten.
    Log {
        /// The axis start.
        min: f64,
        /// The axis end.
        max: f64,
    },
}

/// The value axis for bars of these values: logarithmic between powers of ten when the
/// positive values span more than [`LOG_SPAN`], else linear from 0 to a round number with
/// room for the value labels. Non-positive and non-finite values are not drawn and count for
/// nothing.
pub fn scale_for(values: impl IntoIterator<Item = f64>) -> Scale {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0.0 {
        Scale::Linear { max: 1.0 }
    } else if hi / lo > LOG_SPAN {
        Scale::Log {
            min: 10f64.powf(lo.log10().floor()),
            // A decade more where the largest bar would leave no room for its label.
            max: 10f64.powf((hi * 4.0).log10().ceil()),
        }
    } else {
        Scale::Linear {
            max: nice_ceil(hi * 1.15),
        }
    }
}

/// The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k) that is at least
/// `x`; 1 when `x` is not positive.
pub fn nice_ceil(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return 1.0;
    }
    let decade = 10f64.powf(x.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|&c| c >= x * (1.0 - 1e-12))
        .unwrap_or(10.0 * decade)
}

/// The range of a line panel's vertical axis: the values' span with 5% margins (±1 around a
/// single value); `0..1` without values.
pub fn padded_range(values: impl IntoIterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { 1.0 };
    lo - pad..hi + pad
}

/// A value as printed at the end of its bar: three significant figures or so.
pub fn format_value(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 0.1 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// An axis tick: the number without float noise or a trailing `.0` ("200", "0.3", "2.5").
pub fn format_tick(v: f64) -> String {
    format!("{}", (v * 1e9).round() / 1e9)
}

/// Writes `svg` to `path`.
pub fn write(path: &Path, svg: &str) -> Result<(), String> {
    std::fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))
}

/// The SVG document of a grouped bar chart.
pub fn bars_svg(chart: &BarChart) -> Result<String, String> {
    let values = chart.groups.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let bar_rows = chart.groups.len() as u32 * (chart.series.len() as u32 * 16 + 26);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 110 + bar_rows)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        match scale_for(values) {
            Scale::Linear { max } => draw_bars(&root, chart, 0.0..max, 0.0),
            Scale::Log { min, max } => draw_bars(&root, chart, (min..max).log_scale(), min),
        }?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Draws `chart` on `root` with value axis `x`, bars starting at `base`.
fn draw_bars<X>(
    root: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    chart: &BarChart,
    x: X,
    base: f64,
) -> Result<(), String>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let n = chart.groups.len() as f64;
    let mut ctx = ChartBuilder::on(root)
        .caption(&chart.title, ("sans-serif", 18))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .build_cartesian_2d(x, 0.0..n.max(1.0))
        .map_err(draw_error)?;
    ctx.configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(0)
        .x_label_formatter(&|v| format_tick(*v))
        .x_desc(chart.unit.as_str())
        .draw()
        .map_err(draw_error)?;
    let label_font = ("sans-serif", 13).into_font();
    let value_font = TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    // Group i occupies y from n-i-1 (bottom) to n-i (top): its label in the top 30%, then its
    // bars, one per series, in the band below.
    let band = 0.62 / chart.series.len().max(1) as f64;
    for (i, (label, values)) in chart.groups.iter().enumerate() {
        let top = n - i as f64;
        ctx.draw_series(std::iter::once(Text::new(
            label.clone(),
            (base, top - 0.04),
            label_font.clone(),
        )))
        .map_err(draw_error)?;
        for (s, value) in values.iter().enumerate() {
            let Some(v) = value.filter(|v| v.is_finite() && *v > base) else {
                continue;
            };
            let y1 = top - 0.3 - s as f64 * band;
            let color = PALETTE[s % PALETTE.len()];
            ctx.draw_series([
                Rectangle::new([(base, y1), (v, y1 - band * 0.9)], color.filled()).into_dyn(),
                Text::new(
                    format!(" {}", format_value(v)),
                    (v, y1 - band * 0.45),
                    value_font.clone(),
                )
                .into_dyn(),
            ])
            .map_err(draw_error)?;
        }
    }
    for (s, name) in chart.series.iter().enumerate() {
        let color = PALETTE[s % PALETTE.len()];
        // An empty series, drawn for its legend entry only.
        ctx.draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(draw_error)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(draw_error)
}

/// The SVG document of line panels stacked top to bottom.
pub fn lines_svg(panels: &[LinePanel]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, 380 * panels.len().max(1) as u32)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        for (panel, area) in panels.iter().zip(root.split_evenly((panels.len().max(1), 1))) {
            draw_lines(&area, panel)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Draws one panel of lines with markers.
fn draw_lines(area: &DrawingArea<SVGBackend, plotters::coord::Shift>, panel: &LinePanel) -> Result<(), String> {
    let points = || panel.lines.iter().flat_map(|l| l.points.iter());
    let x = padded_range(points().map(|p| p.0));
    let y = padded_range(points().map(|p| p.1));
    let mut ctx = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d::<Range<f64>, Range<f64>>(x, y)
        .map_err(draw_error)?;
    ctx.configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|v| format_tick(*v))
        .y_label_formatter(&|v| format_tick(*v))
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .draw()
        .map_err(draw_error)?;
    for (i, line) in panel.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        draw_line(&mut ctx, line, color)?;
    }
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(panel.legend.clone())
        .draw()
        .map_err(draw_error)
}

/// One line, its markers and its legend entry.
fn draw_line(
    ctx: &mut ChartContext<SVGBackend, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    line: &Line,
    color: RGBColor,
) -> Result<(), String> {
    ctx.draw_series(LineSeries::new(line.points.iter().copied(), color.stroke_width(2)))
        .map_err(draw_error)?
        .label(line.label.as_str())
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    ctx.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
        .map(|_| ())
        .map_err(draw_error)
}

fn draw_error(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether plotters wrote `text` as one SVG text element.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>"))
    }

    #[test]
    fn round_axis_ends() {
        assert_eq!(nice_ceil(0.7), 0.8);
        assert_eq!(nice_ceil(1.0), 1.0);
        assert_eq!(nice_ceil(1.3), 1.5);
        assert_eq!(nice_ceil(2.3), 2.5);
        assert_eq!(nice_ceil(37.0), 40.0);
        assert_eq!(nice_ceil(60.8), 80.0);
        assert_eq!(nice_ceil(8_001.0), 10_000.0);
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(f64::NAN), 1.0);
    }

    #[test]
    fn linear_unless_values_span_two_decades() {
        // 19.8 × 1.15 = 22.8 → 25.
        assert_eq!(scale_for([4.0, 16.4, 19.8, 5.29]), Scale::Linear { max: 25.0 });
        // 0.08 h documented vs 79 h kiln: log between decades, with a decade of label room.
        assert_eq!(scale_for([0.084, 79.3, 7.9]), Scale::Log { min: 0.01, max: 1000.0 });
        // Unmeasured, zero and NaN values do not count.
        assert_eq!(scale_for([0.0, f64::NAN, 3.0]), Scale::Linear { max: 4.0 });
        assert_eq!(scale_for([]), Scale::Linear { max: 1.0 });
    }

    #[test]
    fn line_axes_have_margins() {
        let r = padded_range([0.9856, 0.9912, 0.99]);
        assert!((r.start - (0.9856 - 0.00028)).abs() < 1e-9 && (r.end - (0.9912 + 0.00028)).abs() < 1e-9);
        assert_eq!(padded_range([3.0]), 2.0..4.0);
        assert_eq!(padded_range([f64::NAN]), 0.0..1.0);
    }

    #[test]
    fn values_print_with_sensible_precision() {
        let printed: Vec<String> = [1517.37, 16.43, 3.974, 0.0842].map(format_value).into();
        assert_eq!(printed, ["1517", "16.4", "3.97", "0.084"]);
        let ticks: Vec<String> = [200.0, 0.1 + 0.2, 2.5, 1e-4].map(format_tick).into();
        assert_eq!(ticks, ["200", "0.3", "2.5", "0.0001"]);
    }

    #[test]
    fn bar_svg_holds_title_labels_legend_and_one_bar_per_value() {
        let chart = BarChart {
            title: "ResNet step".into(),
            unit: "images/s".into(),
            series: vec!["kiln".into(), "PyTorch".into()],
            groups: vec![
                ("resnet18 train".into(), vec![Some(4.0), Some(16.4)]),
                ("resnet50 train".into(), vec![Some(1.0), None]),
            ],
        };
        let svg = bars_svg(&chart).unwrap();
        for text in [
            "ResNet step",
            "images/s",
            "resnet18 train",
            "resnet50 train",
            "kiln",
            "PyTorch",
            " 16.4",
        ] {
            assert!(has_text(&svg, text), "{text} missing");
        }
        // Three measured values: three bars in the series colours (plus two legend swatches).
        let kiln_fill = "fill=\"#D95F02\"";
        assert_eq!(svg.matches(kiln_fill).count(), 2 + 1);
    }

    #[test]
    fn line_svg_has_one_panel_per_title() {
        let panel = |title: &str| LinePanel {
            title: title.into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            legend: SeriesLabelPosition::UpperRight,
            lines: vec![Line {
                label: "run1 train".into(),
                points: vec![(1.0, 0.3), (2.0, 0.1)],
            }],
        };
        let svg = lines_svg(&[panel("Loss"), panel("Accuracy")]).unwrap();
        assert!(has_text(&svg, "Loss") && has_text(&svg, "Accuracy") && has_text(&svg, "run1 train"));
        assert!(svg.contains("height=\"760\""));
    }
}
