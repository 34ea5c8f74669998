//! Hand-written SVG bar charts for the report: standalone `<svg>` elements
//! that Markdown viewers render inline, with a `<title>` per bar for
//! screen readers.

const COLOURS: [&str; 2] = ["#1f6f8b", "#e39b2d"];

fn xml_text(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar per label.
pub fn bars(title: &str, bars: &[(String, i64)]) -> String {
    let grouped: Vec<(String, Vec<i64>)> = bars
        .iter()
        .map(|(label, value)| (label.clone(), vec![*value]))
        .collect();
    grouped_bars(title, &[], &grouped)
}

/// A group of bars per label, one per series (a legend names the series).
pub fn grouped_bars(title: &str, series: &[&str], groups: &[(String, Vec<i64>)]) -> String {
    let per_group = groups
        .iter()
        .map(|(_, v)| v.len())
        .max()
        .unwrap_or(1)
        .max(1) as i64;
    let bar_width = 36;
    let group_width = per_group * bar_width + 24;
    let width = (60 + groups.len() as i64 * group_width).max(320);
    let (height, top, bottom) = (300, 50, 240);
    let tallest = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{title}\">\
         <title>{title}</title>\
         <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-family=\"sans-serif\" \
         font-size=\"15\">{title}</text>\
         <line x1=\"30\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333333\"/>",
        width / 2,
        width - 10,
        title = xml_text(title),
    );
    for (n, name) in series.iter().enumerate() {
        let x = 40 + n as i64 * 110;
        svg.push_str(&format!(
            "<rect x=\"{x}\" y=\"32\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{}\" y=\"41\" font-family=\"sans-serif\" font-size=\"11\">{}</text>",
            COLOURS[n % COLOURS.len()],
            x + 14,
            xml_text(name)
        ));
    }
    for (g, (label, values)) in groups.iter().enumerate() {
        let x0 = 40 + g as i64 * group_width;
        for (n, value) in values.iter().enumerate() {
            let bar_height = (bottom - top - 16) * value.max(&0) / tallest;
            let x = x0 + n as i64 * bar_width;
            let y = bottom - bar_height;
            let name = series.get(n).copied().unwrap_or("");
            svg.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{bar_height}\" fill=\"{}\">\
                 <title>{} {}: {value}</title></rect>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
                 font-size=\"11\">{value}</text>",
                bar_width - 4,
                COLOURS[n % COLOURS.len()],
                xml_text(label),
                xml_text(name),
                x + (bar_width - 4) / 2,
                y - 4
            ));
        }
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-family=\"sans-serif\" \
             font-size=\"11\">{}</text>",
            x0 + (per_group * bar_width - 4) / 2,
            bottom + 16,
            xml_text(label)
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_one_line_of_svg_with_a_bar_per_value_and_escaped_labels() {
        let chart = grouped_bars(
            "Referrals & supported",
            &["referrals", "supported"],
            &[("2026".into(), vec![10, 7]), ("<x>".into(), vec![0, 0])],
        );
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));
        assert!(
            !chart.contains('\n'),
            "one line keeps Markdown from breaking it"
        );
        assert_eq!(
            chart.matches("<rect x=").count(),
            4 + 2,
            "bars and legend keys"
        );
        assert!(chart.contains("Referrals &amp; supported"));
        assert!(chart.contains("&lt;x&gt;"));
    }
}
