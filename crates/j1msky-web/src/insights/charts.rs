//! The board's charts: line charts drawn on the server with `plotters`' SVG backend and
//! inlined in the page as `<svg class="chart" data-chart="…">` with a `<title>` and a
//! `<desc>` listing every point, so they read without JavaScript or sight.

use plotters::prelude::*;

/// One line of a chart: its name, colour and one value per month (in dollars).
pub struct Line {
    pub name: &'static str,
    pub color: RGBColor,
    pub values: Vec<f64>,
}

pub const BLUE_: RGBColor = RGBColor(59, 91, 219);
pub const GREEN_: RGBColor = RGBColor(43, 138, 62);
pub const RED_: RGBColor = RGBColor(201, 42, 42);
pub const ORANGE_: RGBColor = RGBColor(232, 89, 12);
pub const GREY_: RGBColor = RGBColor(107, 115, 133);
pub const TEAL_: RGBColor = RGBColor(12, 133, 153);

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The chart `name` (its `data-chart`) titled `title`, one x tick per label.
pub fn lines(name: &str, title: &str, labels: &[String], lines: &[Line]) -> String {
    let mut buf = String::new();
    if let Err(e) = draw(&mut buf, title, labels, lines) {
        tracing::error!(chart = name, error = %e, "chart failed to draw");
        buf = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"40\"><text x=\"10\" y=\"24\">chart unavailable</text></svg>".into();
    }
    let desc: Vec<String> = lines
        .iter()
        .map(|l| {
            let points: Vec<String> = labels
                .iter()
                .zip(&l.values)
                .map(|(m, v)| format!("{m}: {:.2}", if *v == 0.0 { 0.0 } else { *v }))
                .collect();
            format!("{}: {}", l.name, points.join(", "))
        })
        .collect();
    let open =
        format!("<svg class=\"chart\" data-chart=\"{}\" role=\"img\" aria-label=\"{}\" ", escape(name), escape(title));
    let svg = buf.replacen("<svg ", &open, 1);
    match svg.find('>') {
        Some(i) => format!(
            "{}<title>{}</title><desc>{}</desc>{}",
            &svg[..=i],
            escape(title),
            escape(&desc.join("; ")),
            &svg[i + 1..]
        ),
        None => svg,
    }
}

fn draw(buf: &mut String, title: &str, labels: &[String], lines: &[Line]) -> Result<(), String> {
    let n = labels.len().max(1);
    let all = lines.iter().flat_map(|l| l.values.iter().copied());
    let (lo, hi) = all.fold((0.0_f64, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.1).max(1.0);
    let (lo, hi) = (if lo < 0.0 { lo - pad } else { 0.0 }, hi + pad);
    // Cents on a small scale, whole dollars on a large one.
    let decimals = if hi - lo < 10.0 { 2 } else { 0 };
    let root = SVGBackend::with_string(buf, (720, 280)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(28)
        .y_label_area_size(70)
        .build_cartesian_2d(0..(n - 1).max(1), lo..hi)
        .map_err(|e| e.to_string())?;
    let label_of = |i: &usize| labels.get(*i).cloned().unwrap_or_default();
    chart
        .configure_mesh()
        .x_labels(n)
        .x_label_formatter(&label_of)
        .y_label_formatter(&|v: &f64| format!("${v:.*}", decimals))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for l in lines {
        let color = l.color;
        chart
            .draw_series(LineSeries::new(l.values.iter().enumerate().map(|(i, v)| (i, *v)), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(l.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(GREY_)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_inline_svg_with_title_and_points() {
        let labels = vec!["2026-01".to_string(), "2026-02".to_string()];
        let svg =
            lines("mrr", "MRR <by month>", &labels, &[Line { name: "MRR", color: BLUE_, values: vec![10.0, 25.5] }]);
        assert!(svg.starts_with("<svg class=\"chart\" data-chart=\"mrr\""), "{svg}");
        assert!(svg.contains("<title>MRR &lt;by month&gt;</title>"), "{svg}");
        assert!(svg.contains("2026-02: 25.50"), "{svg}");
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{svg}");
    }
}
