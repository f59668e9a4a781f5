//! The dashboard's stylesheet and script, compiled into the binary: nothing is fetched from
//! elsewhere, so the pages work offline and behind any firewall.

use orchestra_api::Variant;

use super::charts::variant_colour;

const CSS: &str = include_str!("assets/dashboard.css");
pub const JS: &str = include_str!("assets/dashboard.js");

/// The stylesheet, with each variant's swatch in the colour the charts draw it in.
pub fn css() -> String {
    let mut s = CSS.to_string();
    for v in [Variant::D1, Variant::D2, Variant::D3, Variant::D4] {
        s.push_str(&format!(
            ".v.{v}::before {{ background: {}; }}\n",
            variant_colour(v)
        ));
    }
    s
}
