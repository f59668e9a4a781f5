//! Building blocks shared by every network, written once for 2D and 3D: the spatial dimension
//! is a value, not a type, so the cardiac 3D path reuses the same networks.
//!
//! Layers can record what they compute (`trace`), which `orchestra-worker info` uses to print
//! each network's layers, parameters and FLOPs without a separate description to keep in sync.

use std::cell::RefCell;

use tch::{nn, Tensor};

use super::rng;

/// Number of spatial dimensions (the model file's, so that the edge reads the same value).
pub use orchestra_codec::net_config::Spatial;

/// `v` along each spatial axis (a kernel size, stride or padding).
fn repeat(spatial: Spatial, v: i64) -> Vec<i64> {
    vec![v; spatial.n()]
}

/// One line of a network trace.
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub name: String,
    pub kind: String,
    pub input: Vec<i64>,
    pub output: Vec<i64>,
    pub params: u64,
    /// Floating-point operations of the forward pass (a multiply-add counts 2).
    pub flops: u64,
}

thread_local! {
    // A thread-local recorder keeps the forward signatures free of tracing arguments; it is
    // only active inside `trace`.
    static TRACE: RefCell<Option<Vec<LayerInfo>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns every layer it executed, in order.
pub fn trace<T>(f: impl FnOnce() -> T) -> (T, Vec<LayerInfo>) {
    TRACE.with(|t| *t.borrow_mut() = Some(Vec::new()));
    let out = f();
    let layers = TRACE.with(|t| t.borrow_mut().take()).unwrap_or_default();
    (out, layers)
}

fn record(info: impl FnOnce() -> LayerInfo) {
    TRACE.with(|t| {
        if let Some(layers) = t.borrow_mut().as_mut() {
            layers.push(info());
        }
    });
}

fn path_name(p: &nn::Path) -> String {
    p.components().collect::<Vec<_>>().join(".")
}

/// A convolution of any spatial dimension (PyTorch's default initialisation).
#[derive(Debug)]
pub struct Conv {
    name: String,
    weight: Tensor,
    bias: Option<Tensor>,
    kernel: i64,
    /// Per axis: the 3D U-Net does not halve an axis that is already short.
    strides: Vec<i64>,
    padding: i64,
    spatial: Spatial,
}

/// Convolution with `kernel`^d weights, `stride` and `padding`.
#[allow(clippy::too_many_arguments)]
pub fn conv(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    bias: bool,
    spatial: Spatial,
) -> Conv {
    conv_strided(
        p,
        c_in,
        c_out,
        kernel,
        &repeat(spatial, stride),
        padding,
        bias,
        spatial,
    )
}

/// Convolution with a stride per axis.
#[allow(clippy::too_many_arguments)]
pub fn conv_strided(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    strides: &[i64],
    padding: i64,
    bias: bool,
    spatial: Spatial,
) -> Conv {
    let mut shape = vec![c_out, c_in];
    shape.extend(repeat(spatial, kernel));
    let fan_in = (c_in * kernel.pow(spatial.n() as u32)) as f64;
    // PyTorch's default: kaiming_uniform(a = sqrt(5)), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let bound = 1.0 / fan_in.sqrt();
    let init = |shape: &[i64]| rng::uniform(shape, -bound, bound).to_device(p.device());
    Conv {
        name: path_name(&p),
        weight: p.var_copy("weight", &init(&shape)),
        bias: bias.then(|| p.var_copy("bias", &init(&[c_out]))),
        kernel,
        strides: strides.to_vec(),
        padding,
        spatial,
    }
}

impl nn::Module for Conv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let d = self.spatial;
        let (padding, dilation) = (repeat(d, self.padding), repeat(d, 1));
        // conv2d / conv3d rather than the generic `convolution`: they are the ops autocast
        // casts to bf16 (as PyTorch's nn.Conv2d calls them); the kernels are the same.
        let strides = self.strides.as_slice();
        let out = match d {
            Spatial::Two => xs.conv2d(&self.weight, self.bias.as_ref(), strides, padding, dilation, 1),
            Spatial::Three => xs.conv3d(&self.weight, self.bias.as_ref(), strides, padding, dilation, 1),
        };
        record(|| {
            let params = self.weight.numel() as u64 + self.bias.as_ref().map_or(0, |b| b.numel() as u64);
            let per_output = 2 * (self.weight.numel() / self.weight.size()[0] as usize) as u64;
            LayerInfo {
                name: self.name.clone(),
                kind: format!(
                    "conv {k}^{n}/{s}",
                    k = self.kernel,
                    n = d.n(),
                    s = stride_text(&self.strides)
                ),
                input: xs.size(),
                output: out.size(),
                params,
                flops: per_output * out.numel() as u64,
            }
        });
        out
    }
}

/// `2` when every axis is halved, `1x2x2` otherwise.
fn stride_text(strides: &[i64]) -> String {
    match strides {
        [first, rest @ ..] if rest.iter().all(|s| s == first) => first.to_string(),
        _ => strides.iter().map(i64::to_string).collect::<Vec<_>>().join("x"),
    }
}

/// Batch normalisation over (N, spatial...) for each channel, any spatial dimension.
#[derive(Debug)]
pub struct Norm {
    name: String,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
}

pub fn norm(p: nn::Path, channels: i64) -> Norm {
    Norm {
        name: path_name(&p),
        weight: p.var("weight", &[channels], nn::Init::Const(1.0)),
        bias: p.var("bias", &[channels], nn::Init::Const(0.0)),
        running_mean: p.zeros_no_train("running_mean", &[channels]),
        running_var: p.ones_no_train("running_var", &[channels]),
    }
}

impl nn::ModuleT for Norm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.batch_norm(
            Some(&self.weight),
            Some(&self.bias),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            0.1,
            1e-5,
            true,
        );
        record(|| LayerInfo {
            name: self.name.clone(),
            kind: "batchnorm".into(),
            input: xs.size(),
            output: out.size(),
            params: 2 * self.weight.numel() as u64,
            flops: 4 * out.numel() as u64,
        });
        out
    }
}

/// Instance normalisation (each sample and channel over its own voxels) with a learned scale
/// and shift: nnU-Net's choice for 3D, where batches hold two patches and batch statistics are
/// noise. No running statistics: training and inference normalise alike.
#[derive(Debug)]
pub struct InstanceNorm {
    name: String,
    weight: Tensor,
    bias: Tensor,
}

pub fn instance_norm(p: nn::Path, channels: i64) -> InstanceNorm {
    InstanceNorm {
        name: path_name(&p),
        weight: p.var("weight", &[channels], nn::Init::Const(1.0)),
        bias: p.var("bias", &[channels], nn::Init::Const(0.0)),
    }
}

impl nn::Module for InstanceNorm {
    fn forward(&self, xs: &Tensor) -> Tensor {
        // Group norm with one channel per group is instance norm (each sample and channel over
        // its own voxels, biased variance, the same eps and affine), and unlike libtorch's
        // instance_norm it runs on channels-last activations without copying them to the
        // default layout first (`Model::cloud_layout`).
        let channels = self.weight.size()[0];
        let out = xs.group_norm(channels, Some(&self.weight), Some(&self.bias), 1e-5, false);
        record(|| LayerInfo {
            name: self.name.clone(),
            kind: "instancenorm".into(),
            input: xs.size(),
            output: out.size(),
            params: 2 * self.weight.numel() as u64,
            flops: 4 * out.numel() as u64,
        });
        out
    }
}

/// LeakyReLU with SegAN's slope of 0.2 (tch's `leaky_relu` has a fixed 0.01).
pub fn leaky(xs: &Tensor) -> Tensor {
    xs.maximum(&(xs * 0.2))
}

/// Nearest-neighbour upsampling to the spatial sides `to` (the 3D U-Net's skip sides).
pub fn upsample_to(xs: &Tensor, to: &[i64], spatial: Spatial) -> Tensor {
    match spatial {
        Spatial::Two => xs.upsample_nearest2d(to, None, None),
        Spatial::Three => xs.upsample_nearest3d(to, None, None, None),
    }
}

/// Nearest-neighbour upsampling by 2 in every spatial dimension.
pub fn upsample2(xs: &Tensor, spatial: Spatial) -> Tensor {
    let size = xs.size();
    let out: Vec<i64> = size[2..].iter().map(|s| s * 2).collect();
    match spatial {
        Spatial::Two => xs.upsample_nearest2d(out, None, None),
        Spatial::Three => xs.upsample_nearest3d(out, None, None, None),
    }
}

/// conv -> (batchnorm) -> activation, the unit every network here is made of.
#[derive(Debug)]
pub struct ConvBlock {
    conv: Conv,
    norm: Option<Norm>,
    activation: Activation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Leaky,
    Relu,
    None,
}

#[allow(clippy::too_many_arguments)]
pub fn conv_block(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    with_norm: bool,
    activation: Activation,
    spatial: Spatial,
) -> ConvBlock {
    // "Same" padding for odd kernels, halving for the 4x4 stride-2 kernels SegAN uses.
    let padding = if kernel % 2 == 1 {
        kernel / 2
    } else {
        (kernel - stride) / 2
    };
    ConvBlock {
        conv: conv(
            &p / "conv",
            c_in,
            c_out,
            kernel,
            stride,
            padding,
            !with_norm,
            spatial,
        ),
        norm: with_norm.then(|| norm(&p / "bn", c_out)),
        activation,
    }
}

impl nn::ModuleT for ConvBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = nn::Module::forward(&self.conv, xs);
        if let Some(n) = &self.norm {
            ys = n.forward_t(&ys, train);
        }
        match self.activation {
            Activation::Leaky => leaky(&ys),
            Activation::Relu => ys.relu(),
            Activation::None => ys,
        }
    }
}

/// Residual block: x + BN(conv(LReLU(BN(conv(x))))), then LeakyReLU.
#[derive(Debug)]
pub struct Residual {
    a: ConvBlock,
    b: ConvBlock,
}

pub fn residual(p: nn::Path, channels: i64, spatial: Spatial) -> Residual {
    Residual {
        a: conv_block(
            &p / "a",
            channels,
            channels,
            3,
            1,
            true,
            Activation::Leaky,
            spatial,
        ),
        b: conv_block(
            &p / "b",
            channels,
            channels,
            3,
            1,
            true,
            Activation::None,
            spatial,
        ),
    }
}

impl nn::ModuleT for Residual {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        leaky(&(xs + self.b.forward_t(&self.a.forward_t(xs, train), train)))
    }
}
