//! The percentile plot is well-formed SVG with one curve per non-empty series, on a nines axis.

use loadgen::latency::new_histogram;
use loadgen::plot::{Series, percentile_svg};

fn histogram(values: impl IntoIterator<Item = u64>) -> hdrhistogram::Histogram<u64> {
    let mut h = new_histogram();
    for value in values {
        h.record(value).unwrap();
    }
    h
}

#[test]
fn the_plot_is_well_formed_xml_with_a_path_per_series() {
    // 100k samples, 20 µs..1 ms with a 20 ms tail; a baseline of 10k around 50 µs; an empty one.
    let gateway = histogram((0..100_000u64).map(|i| if i % 1000 == 0 { 20_000_000 } else { 20_000 + i * 10 }));
    let baseline = histogram((0..10_000u64).map(|i| 50_000 + i));
    let empty = new_histogram();
    let series = [
        Series { label: "sbe ack_all", histogram: &gateway, dashed: false },
        Series { label: "sbe ack_<cancel> & \"x\"", histogram: &empty, dashed: false },
        Series { label: "baseline rtt", histogram: &baseline, dashed: true },
    ];
    let svg = percentile_svg("loadgen sbe <test> & baseline", &series);
    let document = roxmltree::Document::parse(&svg).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    let paths: Vec<_> =
        document.descendants().filter(|n| n.has_tag_name("path") && n.attribute("class") == Some("series")).collect();
    let labels: Vec<_> = paths.iter().map(|n| n.attribute("data-label").unwrap()).collect();
    assert_eq!(labels, ["sbe ack_all", "baseline rtt"], "one path per non-empty series");
    assert!(paths[1].attribute("stroke-dasharray").is_some(), "the baseline is dashed");
    assert!(paths[0].attribute("stroke-dasharray").is_none());
    // Each path is a polyline of many points inside the plot area, x increasing.
    for path in &paths {
        let d = path.attribute("d").unwrap();
        let points: Vec<(f64, f64)> = d
            .split(['M', 'L'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(points.len() > 20, "{} points", points.len());
        assert!(points.windows(2).all(|w| w[1].0 >= w[0].0), "x never goes back");
        assert!(points.iter().all(|&(x, y)| (80.0..=690.0).contains(&x) && (50.0..=500.0).contains(&y)));
    }
    // 100k samples: the axis reaches 99.999% (five nines); the title is escaped text.
    let texts: Vec<String> =
        document.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(str::to_owned).collect();
    assert!(texts.iter().any(|t| t == "99.999%"), "{texts:?}");
    assert!(texts.iter().any(|t| t == "loadgen sbe <test> & baseline"));
    assert!(texts.iter().any(|t| t == "10 ms"), "{texts:?}");
}

#[test]
fn an_empty_plot_is_still_a_document() {
    let svg = percentile_svg("nothing", &[]);
    let document = roxmltree::Document::parse(&svg).unwrap();
    assert!(document.descendants().any(|n| n.text() == Some("no samples")));
}
