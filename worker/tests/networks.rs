//! The networks' shapes for both presets and both spatial dimensions, and gradient flow.

mod common;

use orchestra_api::{ModelSpec, Preset, Variant};
use orchestra_worker::nets::{Group, Model, NetConfig};
use tch::{Device, Kind, Tensor};

fn config(preset: Preset, size: u32, dims: u32, channels: usize, classes: usize) -> NetConfig {
    let spec = ModelSpec::new(preset, size, dims);
    orchestra_worker::nets::config::resolve(&spec, channels, classes)
}

fn check_shapes(c: &NetConfig, batch: i64) {
    let _guard = tch::no_grad_guard();
    let model = Model::new(c.clone(), Variant::D4, Device::Cpu);
    let mut shape = vec![batch, c.in_channels];
    shape.extend(std::iter::repeat_n(c.input_size, c.spatial.n()));
    let x = Tensor::rand(shape.as_slice(), (Kind::Float, Device::Cpu));
    for train in [true, false] {
        let f = model.forward(&x, train);
        let bits = f.bits.as_ref().unwrap();
        let mut code = vec![batch, c.code_channels];
        code.extend(std::iter::repeat_n(c.input_size / c.downsample, c.spatial.n()));
        assert_eq!(bits.size(), code, "code shape");
        assert_eq!(bits.abs().min().double_value(&[]), 1.0, "bits are +-1");
        let mut out = vec![batch, c.out_channels()];
        out.extend(std::iter::repeat_n(c.input_size, c.spatial.n()));
        assert_eq!(f.probs.size(), out, "segmentation shape");
        let feats = model.critic.as_ref().unwrap().features(&f.probs, train);
        assert_eq!(
            feats.len() as i64,
            c.d_depth + 1,
            "input plus one map per critic block"
        );
        assert_eq!(feats[1].size()[1], c.d_width);
    }
}

#[test]
fn small_preset_shapes_2d_binary_and_multiclass() {
    check_shapes(&config(Preset::Small, 64, 2, 3, 2), 2);
    check_shapes(&config(Preset::Small, 128, 2, 1, 3), 1);
}

#[test]
fn small_preset_shapes_3d() {
    check_shapes(&config(Preset::Small, 32, 3, 1, 3), 1);
}

#[test]
fn paper_preset_shapes_and_sizes() {
    let c = config(Preset::Paper, 128, 2, 3, 2);
    check_shapes(&c, 1);
    let model = Model::new(c.clone(), Variant::D4, Device::Cpu);
    let c_params = model.param_count(Group::Compressor);
    assert!(
        (1_000_000..2_000_000).contains(&c_params),
        "paper C has about 1.3 M parameters, got {c_params}"
    );
    assert!(
        model.param_count(Group::Segmentor) > 10_000_000,
        "paper segmentor is tens of millions"
    );
    assert_eq!(c.code_bits(), 192, "128px, f = 16, K = 3 gives 192 bits");
}

#[test]
fn gradients_reach_the_compressor_through_binarization() {
    let c = config(Preset::Small, 64, 2, 3, 2);
    let model = Model::new(c, Variant::D2, Device::Cpu);
    let x = Tensor::rand([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    let f = model.forward(&x, true);
    f.probs.mean(Kind::Float).backward();
    for (name, p) in model.group_params(Group::Compressor) {
        let g = p.grad();
        assert!(g.defined(), "{name} has no gradient");
        if name.ends_with("weight") && !name.contains(".bn") {
            assert!(
                g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{name} gradient is zero"
            );
        }
    }
}
