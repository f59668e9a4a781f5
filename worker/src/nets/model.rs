//! The networks of one variant in one VarStore, named by group: `c` (compressor), `g`
//! (reconstruction), `q` (bit model), `s` (segmentor), `d` (critic).

use orchestra_api::Variant;
use tch::{nn, Device, Kind, Tensor};

use super::binarize::binarize;
use super::bit_model::BitModel;
use super::compressor::Compressor;
use super::config::NetConfig;
use super::critic::Critic;
use super::layers::Spatial;
use super::reconstructor::Reconstructor;
use super::segmentor::Segmentor;
use super::unet::UNet;

/// Parameter groups, the prefixes of variable names in the VarStore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    Compressor,
    Reconstructor,
    BitModel,
    Segmentor,
    Critic,
}

impl Group {
    pub const ALL: [Group; 5] = [
        Group::Compressor,
        Group::Reconstructor,
        Group::BitModel,
        Group::Segmentor,
        Group::Critic,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Group::Compressor => "c",
            Group::Reconstructor => "g",
            Group::BitModel => "q",
            Group::Segmentor => "s",
            Group::Critic => "d",
        }
    }

    pub fn of(name: &str) -> Option<Group> {
        let head = name.split('.').next()?;
        Group::ALL.into_iter().find(|g| g.prefix() == head)
    }
}

/// What one forward pass of C and S produced.
pub struct Forward {
    /// C's activations before binarization (None for D1).
    pub activations: Option<Tensor>,
    /// The binary code in {-1, +1} (None for D1).
    pub bits: Option<Tensor>,
    /// g's map, what s reads (None for D1, whose s reads the image).
    pub features: Option<Tensor>,
    /// S's class probabilities.
    pub probs: Tensor,
}

/// s: SegAN's segmentor on images, nnU-Net's 3D U-Net on volumes (the paper uses nnU-Net for
/// its cardiac volumes).
#[derive(Debug)]
pub enum SegmentorNet {
    SegAn(Segmentor),
    UNet(UNet),
}

impl nn::ModuleT for SegmentorNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            SegmentorNet::SegAn(s) => s.forward_t(xs, train),
            SegmentorNet::UNet(u) => u.forward_t(xs, train),
        }
    }
}

pub struct Model {
    pub vs: nn::VarStore,
    pub config: NetConfig,
    pub variant: Variant,
    pub compressor: Option<Compressor>,
    pub reconstructor: Option<Reconstructor>,
    pub bit_model: Option<BitModel>,
    pub segmentor: SegmentorNet,
    pub critic: Option<Critic>,
}

impl Model {
    /// Builds the networks `variant` uses. Initial weights come from this thread's generator
    /// (`rng::reseed` first for reproducible runs).
    pub fn new(config: NetConfig, variant: Variant, device: Device) -> Model {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (compressor, reconstructor, bit_model) = if variant.has_compressor() {
            (
                Some(Compressor::new(&root / Group::Compressor.prefix(), &config)),
                Some(Reconstructor::new(&root / Group::Reconstructor.prefix(), &config)),
                Some(BitModel::new(
                    &root / Group::BitModel.prefix(),
                    config.code_channels,
                    config.spatial,
                )),
            )
        } else {
            (None, None, None)
        };
        let s_in = if variant.has_compressor() {
            config.g_out
        } else {
            config.in_channels
        };
        let s_path = &root / Group::Segmentor.prefix();
        let segmentor = match config.spatial {
            Spatial::Two => SegmentorNet::SegAn(Segmentor::new(s_path, &config, s_in)),
            Spatial::Three => SegmentorNet::UNet(UNet::new(s_path, &config, s_in)),
        };
        let critic = variant
            .has_critic()
            .then(|| Critic::new(&root / Group::Critic.prefix(), &config));
        Model {
            vs,
            config,
            variant,
            compressor,
            reconstructor,
            bit_model,
            segmentor,
            critic,
        }
    }

    /// Trainable variables of a group, sorted by name (a stable order for optimisers and
    /// gradient buckets).
    pub fn group_params(&self, group: Group) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(name, _)| Group::of(name) == Some(group) && !is_buffer(name))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Every variable (weights and BatchNorm statistics), sorted by name.
    pub fn named_variables(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The same weights in a new model on `device` (a GPU column from a model loaded on the
    /// CPU, without reading its checkpoint twice).
    pub fn copy_to(&self, device: Device) -> Result<Model, String> {
        let copy = Model::new(self.config.clone(), self.variant, device);
        copy.load_weights(&self.named_variables())?;
        Ok(copy)
    }

    /// Lays the 3D convolution weights of g and s out channels-last (the values unchanged),
    /// so that oneDNN runs their convolutions on channels-last activations without reordering
    /// every input to its blocked layout and back: about twice as fast on the CPU for the
    /// 3D U-Net's 8- to 64-channel layers (docs/results/2026-12-04-cloud-volume.md). For
    /// inference on the CPU only: C keeps its layout (the edge's codes are checked against it),
    /// and training keeps PyTorch's default.
    pub fn cloud_layout(&self) {
        if self.config.spatial != Spatial::Three || self.vs.device() != Device::Cpu {
            return;
        }
        tch::no_grad(|| {
            for (name, mut var) in self.named_variables() {
                if var.dim() == 5 && (name.starts_with("g.") || name.starts_with("s.")) {
                    let last = var.permute([0, 2, 3, 4, 1]).contiguous().permute([0, 4, 1, 2, 3]);
                    var.set_data(&last);
                }
            }
        });
    }

    /// Copies saved tensors into the model's variables; every variable must be present with the
    /// same shape, and nothing else may be.
    pub fn load_weights(&self, saved: &[(String, Tensor)]) -> Result<(), String> {
        let vars = self.named_variables();
        if let Some((extra, _)) = saved.iter().find(|(n, _)| !vars.iter().any(|(v, _)| v == n)) {
            return Err(format!("unexpected tensor {extra} (another variant or preset?)"));
        }
        tch::no_grad(|| {
            for (name, var) in &vars {
                let (_, src) = saved
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| format!("missing tensor {name}"))?;
                if src.size() != var.size() {
                    return Err(format!(
                        "{name}: saved shape {:?}, model has {:?}",
                        src.size(),
                        var.size()
                    ));
                }
                var.shallow_clone().copy_(&src.to_device(var.device()));
            }
            Ok(())
        })
    }

    /// BatchNorm running statistics, sorted by name.
    pub fn buffers(&self) -> Vec<(String, Tensor)> {
        let mut v = self.named_variables();
        v.retain(|(name, _)| is_buffer(name));
        v
    }

    pub fn param_count(&self, group: Group) -> u64 {
        self.group_params(group)
            .iter()
            .map(|(_, t)| t.numel() as u64)
            .sum()
    }

    /// Freezes or unfreezes a group (no gradients are computed for frozen parameters).
    pub fn set_trainable(&self, group: Group, trainable: bool) {
        for (_, t) in self.group_params(group) {
            let _ = t.set_requires_grad(trainable);
        }
    }

    /// Image -> code (C, binarization). None for D1.
    pub fn encode(&self, images: &Tensor, train: bool) -> Option<(Tensor, Tensor)> {
        let c = self.compressor.as_ref()?;
        let activations = nn::ModuleT::forward_t(c, images, train);
        let bits = binarize(&activations, train);
        Some((activations, bits))
    }

    /// Code -> class probabilities (g, s).
    pub fn segment_bits(&self, bits: &Tensor, train: bool) -> Tensor {
        let features = self.features(bits, train);
        nn::ModuleT::forward_t(&self.segmentor, &features, train)
    }

    /// Code -> g's map.
    fn features(&self, bits: &Tensor, train: bool) -> Tensor {
        let g = self
            .reconstructor
            .as_ref()
            .expect("g runs only in a compressing variant");
        nn::ModuleT::forward_t(g, bits, train)
    }

    /// Image -> code -> g's map (C, binarization, g): what s reads. None for D1.
    pub fn rebuild(&self, images: &Tensor, train: bool) -> Option<Tensor> {
        let (_, bits) = self.encode(images, train)?;
        Some(self.features(&bits, train))
    }

    /// The full C + S pass the variant runs.
    pub fn forward(&self, images: &Tensor, train: bool) -> Forward {
        match self.encode(images, train) {
            Some((activations, bits)) => {
                let features = self.features(&bits, train);
                let probs = nn::ModuleT::forward_t(&self.segmentor, &features, train);
                Forward {
                    activations: Some(activations),
                    bits: Some(bits),
                    features: Some(features),
                    probs,
                }
            }
            None => Forward {
                activations: None,
                bits: None,
                features: None,
                probs: nn::ModuleT::forward_t(&self.segmentor, images, train),
            },
        }
    }

    /// The training target in S's output layout: a (N, 1, H, W) map for binary tasks, one-hot
    /// (N, classes, H, W) otherwise.
    pub fn target(&self, labels: &Tensor) -> Tensor {
        if self.config.classes == 2 {
            labels.unsqueeze(1).to_kind(Kind::Float)
        } else {
            labels
                .one_hot(self.config.classes)
                .permute(permutation_channels_first(labels.dim() + 1).as_slice())
                .to_kind(Kind::Float)
        }
    }

    /// Class indices (N, H, W) from S's probabilities.
    pub fn labels(&self, probs: &Tensor) -> Tensor {
        if self.config.classes == 2 {
            probs.squeeze_dim(1).gt(0.5).to_kind(Kind::Int64)
        } else {
            probs.argmax(1, false)
        }
    }
}

/// BatchNorm running statistics: saved with the weights, never trained.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// (0, last, 1, 2, ...): moves a trailing one-hot axis to position 1.
fn permutation_channels_first(ndim: usize) -> Vec<i64> {
    let last = ndim as i64 - 1;
    std::iter::once(0)
        .chain(std::iter::once(last))
        .chain(1..last)
        .collect()
}
