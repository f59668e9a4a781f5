//! Per-network layer tables: shapes, parameters and FLOPs at a given input size, taken from a
//! traced forward pass so they always describe the networks as built.

use std::fmt::Write;

use orchestra_api::Variant;
use tch::{nn::ModuleT, Device};

use crate::nets::layers::{trace, LayerInfo};
use crate::nets::{Group, Model, NetConfig};

/// One network's summary.
pub struct NetworkInfo {
    pub name: &'static str,
    pub layers: Vec<LayerInfo>,
    pub params: u64,
    pub flops: u64,
}

/// Traces every network of `variant` on one input of the configured size.
pub fn describe(config: &NetConfig, variant: Variant) -> Vec<NetworkInfo> {
    let _guard = tch::no_grad_guard();
    crate::nets::rng::reseed(0);
    let model = Model::new(config.clone(), variant, Device::Cpu);
    let mut shape = vec![1, config.in_channels];
    shape.extend(&config.sides);
    let image = crate::nets::rng::uniform(&shape, 0.0, 1.0);
    let mut out = Vec::new();
    let mut push = |name: &'static str, group: Group, layers: Vec<LayerInfo>| {
        out.push(NetworkInfo {
            name,
            flops: layers.iter().map(|l| l.flops).sum(),
            params: model.param_count(group),
            layers,
        });
    };
    let (encoded, c_layers) = trace(|| model.encode(&image, false));
    let seg_input = match encoded {
        Some((_, bits)) => {
            push("C (compressor)", Group::Compressor, c_layers);
            let g = model.reconstructor.as_ref().expect("compressing variants have g");
            let (features, layers) = trace(|| g.forward_t(&bits, false));
            push("g (feature reconstruction)", Group::Reconstructor, layers);
            features
        }
        None => image,
    };
    let (probs, layers) = trace(|| model.segmentor.forward_t(&seg_input, false));
    push("s (segmentor)", Group::Segmentor, layers);
    if let Some(d) = &model.critic {
        let (_, layers) = trace(|| d.features(&probs, false));
        push("D (critic)", Group::Critic, layers);
    }
    if model.bit_model.is_some() {
        push("q (bit model)", Group::BitModel, Vec::new());
    }
    out
}

/// Sides as `16x64x64`.
fn times(sides: &[i64]) -> String {
    sides.iter().map(i64::to_string).collect::<Vec<_>>().join("x")
}

/// A human-readable table of `describe`'s output.
pub fn render(config: &NetConfig, networks: &[NetworkInfo], verbose: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "input {sides} x {c} channels, {classes} classes; code {k} x {cs} = {bits} bits = {bpp:.4} bpp before entropy coding",
        sides = times(&config.sides),
        c = config.in_channels,
        classes = config.classes,
        k = config.code_channels,
        cs = times(&config.code_sides()),
        bits = config.code_bits(),
        bpp = config.code_bits() as f64 / config.pixels() as f64,
    );
    for n in networks {
        let _ = writeln!(
            s,
            "\n{}: {} parameters, {:.3} GFLOPs per image",
            n.name,
            group_digits(n.params),
            n.flops as f64 / 1e9
        );
        if verbose {
            let _ = writeln!(
                s,
                "  {:<28} {:<14} {:<22} {:>10} {:>12}",
                "layer", "kind", "output", "params", "MFLOPs"
            );
            for l in &n.layers {
                let _ = writeln!(
                    s,
                    "  {:<28} {:<14} {:<22} {:>10} {:>12.2}",
                    l.name,
                    l.kind,
                    format!("{:?}", &l.output[1..]),
                    group_digits(l.params),
                    l.flops as f64 / 1e6
                );
            }
        }
    }
    s
}

fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}
