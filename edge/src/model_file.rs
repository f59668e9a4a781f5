//! The edge's view of a deployable model file (written by `orchestra-worker export`): C's
//! weights, q's logits and the sizes it needs, checked tensor by tensor before anything runs.
//! g, s and the metadata the cloud needs are left in the file unread.

use std::collections::BTreeMap;
use std::path::Path;

use orchestra_codec::deploy::{
    codec_for_model, BIT_MODEL_LOGITS, COMPRESSOR_PREFIX, META_CONFIG, META_VARIANT, META_VOLUME,
};
use orchestra_codec::net_config::NetConfig;
use orchestra_codec::{CodeShape, Codec, CodecError, Limits, CONTEXTS};
use safetensors::{Dtype, SafeTensors};

use crate::compressor::{binarize, Compressor, Conv, Planes};
use crate::plane_stream::LayerWork;
use crate::preparation::VolumePreprocessing;
use crate::tiling::{halo_cells, TiledPass};
use crate::volume::DEFAULT_MAX_VOXELS;

/// The largest model file the edge reads (the paper preset's whole file is about 60 MB).
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: not an Orchestra model file: {reason}")]
    Format { path: String, reason: String },
    #[error("{path}: model file is {bytes} bytes, above the edge's limit of {MAX_MODEL_BYTES}")]
    TooLarge { path: String, bytes: u64 },
    #[error("{path}: variant {variant} sends raw images and has no C to run (use D2, D3 or D4)")]
    NoCompressor { path: String, variant: String },
    #[error("input of shape {found:?}: the model takes {expected}")]
    Input { found: Vec<usize>, expected: String },
    #[error("a scan needs a volume model with its scan preparation (model.dims 3, exported from its trial); this model is {dims}D{}", if *.prepared { "" } else { " without one" })]
    NotVolumeModel { dims: usize, prepared: bool },
    #[error("C: {0}")]
    Compute(#[from] candle_core::Error),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The sizes the edge needs from the file's `orchestra.config` (the worker's `NetConfig`, whose
/// schema the codec crate owns; the widths come from the tensors themselves), each checked to be
/// a positive size before anything is shaped by it.
#[derive(Clone, Debug)]
struct Sizes {
    dims: usize,
    input_size: usize,
    /// Sides of one network input (a volume model's training patch); older files lack it.
    sides: Vec<usize>,
    in_channels: usize,
    downsample: usize,
    code_channels: usize,
}

/// The largest side, channel count or factor a model file may announce (far above any network
/// that trains, far below what could overflow a product of three).
const MAX_SIZE: i64 = 1 << 20;

impl Sizes {
    fn of(config: &NetConfig) -> Result<Sizes, String> {
        let size = |field: &str, v: i64| {
            if (1..=MAX_SIZE).contains(&v) {
                Ok(v as usize)
            } else {
                Err(format!(
                    "{META_CONFIG}: {field} is {v}, not a size from 1 to {MAX_SIZE}"
                ))
            }
        };
        Ok(Sizes {
            dims: config.spatial.n(),
            input_size: size("input_size", config.input_size)?,
            sides: config
                .sides
                .iter()
                .map(|&s| size("sides", s))
                .collect::<Result<_, _>>()?,
            in_channels: size("in_channels", config.in_channels)?,
            downsample: size("downsample", config.downsample)?,
            code_channels: size("code_channels", config.code_channels)?,
        })
    }
}

/// C and the entropy coder of one trained model.
#[derive(Debug)]
pub struct EdgeModel {
    pub compressor: Compressor,
    pub codec: Codec,
    /// Side of the images (volumes) the model takes.
    pub input_size: usize,
    pub in_channels: usize,
    /// 2 for images, 3 for volumes.
    pub dims: usize,
    pub variant: String,
    /// C's downsampling factor f.
    pub downsample: usize,
    /// Sides of one network input (z, y, x for volumes: the training patch).
    pub sides: Vec<usize>,
    /// Volume models: how a scan is prepared before C.
    pub volume: Option<VolumePreprocessing>,
}

impl EdgeModel {
    pub fn load(path: &Path) -> Result<EdgeModel, EdgeError> {
        let name = path.display().to_string();
        let io = |e: std::io::Error| EdgeError::Io {
            path: name.clone(),
            reason: e.to_string(),
        };
        let bytes = std::fs::metadata(path).map_err(io)?.len();
        if bytes > MAX_MODEL_BYTES {
            return Err(EdgeError::TooLarge { path: name, bytes });
        }
        let data = std::fs::read(path).map_err(io)?;
        EdgeModel::from_bytes(&data, &name)
    }

    /// Reads a model file's bytes; `name` names it in errors.
    pub fn from_bytes(data: &[u8], name: &str) -> Result<EdgeModel, EdgeError> {
        let format = |reason: String| EdgeError::Format {
            path: name.to_string(),
            reason,
        };
        let (_, header) =
            SafeTensors::read_metadata(data).map_err(|e| format(format!("safetensors header: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let variant = meta
            .get(META_VARIANT)
            .ok_or_else(|| format(format!("metadata lacks {META_VARIANT}")))?
            .clone();
        let config: NetConfig = serde_json::from_str(
            meta.get(META_CONFIG)
                .ok_or_else(|| format(format!("metadata lacks {META_CONFIG}")))?,
        )
        .map_err(|e| format(format!("{META_CONFIG}: {e}")))?;
        let sizes = Sizes::of(&config).map_err(format)?;
        let file = SafeTensors::deserialize(data).map_err(|e| format(format!("safetensors: {e}")))?;
        if !file.names().iter().any(|n| n.starts_with(COMPRESSOR_PREFIX)) {
            return Err(EdgeError::NoCompressor {
                path: name.to_string(),
                variant,
            });
        }
        let dims = sizes.dims;
        let weights = Weights {
            file,
            dims,
            format: &format,
        };
        let (compressor, c_values) = weights.compressor(&sizes)?;
        let logits = weights.floats(BIT_MODEL_LOGITS, &[sizes.code_channels, CONTEXTS as usize])?;
        if !sizes.input_size.is_multiple_of(sizes.downsample) {
            return Err(format(format!(
                "{META_CONFIG}: input size {} is not a multiple of the downsampling factor {}",
                sizes.input_size, sizes.downsample
            )));
        }
        let sides = if sizes.sides.len() == dims {
            sizes.sides.clone()
        } else {
            vec![sizes.input_size; dims]
        };
        if sides.iter().any(|s| !s.is_multiple_of(sizes.downsample)) {
            return Err(format(format!(
                "{META_CONFIG}: input sides {sides:?} are not multiples of the downsampling factor {}",
                sizes.downsample
            )));
        }
        let shape = CodeShape {
            channels: sizes.code_channels,
            sides: sides.iter().map(|s| s / sizes.downsample).collect(),
        };
        // The tag covers C's tensors in name order (the map's order), as the worker sorts them.
        let mut codec = codec_for_model(&logits, c_values.values().map(Vec::as_slice), shape)?;
        if dims == 3 {
            // As the worker's: a whole volume is coded in one piece.
            codec = codec.with_limits(Limits::volumes(sizes.downsample, DEFAULT_MAX_VOXELS));
        }
        let volume: Option<VolumePreprocessing> = meta
            .get(META_VOLUME)
            .map(|v| serde_json::from_str(v).map_err(|e| format(format!("{META_VOLUME}: {e}"))))
            .transpose()?;
        if let Some(v) = &volume {
            v.check().map_err(|e| format(format!("{META_VOLUME}: {e}")))?;
        }
        Ok(EdgeModel {
            compressor,
            codec,
            input_size: sizes.input_size,
            in_channels: sizes.in_channels,
            dims,
            variant,
            downsample: sizes.downsample,
            sides,
            volume,
        })
    }

    /// Pixels (voxels) of one input at the model's size, the denominator of bpp.
    pub fn pixels(&self) -> usize {
        self.sides.iter().product()
    }

    /// The downsampling factor f: the code's side is the input's side / f.
    pub fn downsample(&self) -> usize {
        self.downsample
    }

    /// Checks that an input has the model's channel count and sides C can halve down to a code
    /// (any positive multiple of f; a depth of 1 for a 2D model).
    fn check_input(&self, x: &Planes) -> Result<(), EdgeError> {
        let f = self.downsample();
        let spatial = &x.sides[3 - self.dims..];
        let ok = x.channels == self.in_channels
            && (self.dims == 3 || x.sides[0] == 1)
            && spatial.iter().all(|&s| s > 0 && s % f == 0)
            && x.data.len() == x.channels * x.sides.iter().product::<usize>();
        if ok {
            return Ok(());
        }
        Err(EdgeError::Input {
            found: std::iter::once(x.channels).chain(x.sides).collect(),
            expected: format!(
                "{} channels of {} sides, each a multiple of {f}",
                self.in_channels, self.dims
            ),
        })
    }

    /// C's activations before binarization, (K, sides / f).
    pub fn activations(&self, x: &Planes) -> Result<Planes, EdgeError> {
        self.check_input(x)?;
        Ok(self.compressor.activations(x)?)
    }

    /// An input's code (bits -1/+1 in coding order) and its shape.
    pub fn code(&self, x: &Planes) -> Result<(CodeShape, Vec<i8>), EdgeError> {
        let a = self.activations(x)?;
        let shape = CodeShape {
            channels: a.channels,
            sides: a.sides[3 - self.dims..].to_vec(),
        };
        Ok((shape, binarize(&a)))
    }

    /// A volume's code computed plane by plane (`plane_stream`) from `data` (one channel of
    /// `data_sides`, zeros beyond them up to `sides`, each a multiple of f), with each layer's
    /// work and time; `None` where the direct kernels do not cover C on this CPU.
    #[allow(clippy::type_complexity)]
    pub fn code_streamed(
        &self,
        data: &[f32],
        data_sides: [usize; 3],
        sides: [usize; 3],
    ) -> Option<Result<(CodeShape, Vec<i8>, Vec<LayerWork>), EdgeError>> {
        let f = self.downsample();
        let fits = self.dims == 3
            && self.in_channels == 1
            && sides.iter().all(|&s| s > 0 && s % f == 0)
            && (0..3).all(|a| data_sides[a] <= sides[a])
            && data.len() == data_sides.iter().product::<usize>();
        if !fits {
            return Some(Err(EdgeError::Input {
                found: std::iter::once(1).chain(sides).collect(),
                expected: format!("a volume model's one channel of 3 sides, each a multiple of {f}"),
            }));
        }
        let streamed = self.compressor.streamed(data, data_sides, sides)?;
        Some(streamed.map_err(EdgeError::from).map(|(a, work)| {
            let shape = CodeShape {
                channels: a.channels,
                sides: a.sides.to_vec(),
            };
            (shape, binarize(&a), work)
        }))
    }

    /// A volume's code computed tile by tile (`tile` kept code cells per axis): the code of
    /// the whole pass, in the memory of one tile's region.
    pub fn code_tiled(&self, x: &Planes, tile: [usize; 3]) -> Result<(CodeShape, Vec<i8>), EdgeError> {
        self.code_tiled_by(x, tile, |p| self.compressor.activations(p))
    }

    /// `code_tiled` with every layer on the unfold path, as CPUs without the direct kernels
    /// run it (for benchmarks against the plane stream).
    pub fn code_tiled_unfolded(
        &self,
        x: &Planes,
        tile: [usize; 3],
    ) -> Result<(CodeShape, Vec<i8>), EdgeError> {
        self.code_tiled_by(x, tile, |p| self.compressor.activations_unfolded(p))
    }

    /// Floating-point operations of C over a volume of `sides` in tiles of `tile` cells (each
    /// computed on its region, halo included) and over the whole volume in one piece.
    pub fn tiled_work(&self, sides: [usize; 3], tile: [usize; 3]) -> TiledWork {
        let f = self.downsample();
        let halo = halo_cells(&self.compressor.axis_layers(), f, 1);
        let total = crate::tiling::tiles(sides.map(|s| s / f), tile, halo)
            .iter()
            .map(|t| self.compressor.flops(t.region_sides().map(|c| c * f)))
            .sum();
        TiledWork {
            total,
            kept: self.compressor.flops(sides),
        }
    }

    fn code_tiled_by(
        &self,
        x: &Planes,
        tile: [usize; 3],
        pass: impl Fn(&Planes) -> candle_core::Result<Planes> + Sync,
    ) -> Result<(CodeShape, Vec<i8>), EdgeError> {
        self.check_input(x)?;
        if self.dims != 3 {
            return Err(EdgeError::NotVolumeModel {
                dims: self.dims,
                prepared: self.volume.is_some(),
            });
        }
        let f = self.downsample();
        let cells = x.sides.map(|s| s / f);
        let halo = halo_cells(&self.compressor.axis_layers(), f, 1);
        let k = self.compressor.layers.last().map_or(0, |l| l.c_out);
        // Tiles run in parallel: the unfold of one tile is single-threaded, so one tile per
        // thread keeps the cores busy (each thread holds one tile's memory).
        let data = TiledPass {
            input: &x.data,
            in_channels: x.channels,
            cells,
            scale_in: [f; 3],
            scale_out: [1; 3],
            out_channels: k,
            tile,
            halo,
        }
        .run_parallel(|region, sides| {
            let planes = Planes {
                channels: x.channels,
                sides,
                data: region.to_vec(),
            };
            pass(&planes).map(|a| a.data)
        })?;
        let a = Planes {
            channels: k,
            sides: cells,
            data,
        };
        let shape = CodeShape {
            channels: a.channels,
            sides: cells.to_vec(),
        };
        Ok((shape, binarize(&a)))
    }

    /// An input (C, sides) in [0, 1] -> its bitstream.
    pub fn encode(&self, x: &Planes) -> Result<Vec<u8>, EdgeError> {
        let (shape, bits) = self.code(x)?;
        Ok(self.codec.encode(&shape, &bits)?)
    }
}

/// C's work over a volume in tiles.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TiledWork {
    /// Over every tile's region, halos included.
    pub total: f64,
    /// Over the volume in one piece: the work the tiles keep.
    pub kept: f64,
}

/// The file's tensors, read with their expected shapes.
struct Weights<'a, F: Fn(String) -> EdgeError> {
    file: SafeTensors<'a>,
    dims: usize,
    format: &'a F,
}

impl<F: Fn(String) -> EdgeError> Weights<'_, F> {
    /// A float tensor's values; `shape` entries of 0 accept any size there.
    fn floats_any(&self, name: &str, shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), EdgeError> {
        let t = self
            .file
            .tensor(name)
            .map_err(|_| (self.format)(format!("tensor {name} is missing")))?;
        if t.dtype() != Dtype::F32 {
            return Err((self.format)(format!(
                "tensor {name} is {:?}, expected F32",
                t.dtype()
            )));
        }
        let fits =
            t.shape().len() == shape.len() && t.shape().iter().zip(shape).all(|(&a, &e)| e == 0 || a == e);
        if !fits {
            return Err((self.format)(format!(
                "tensor {name} has shape {:?}, expected {:?} (0: any)",
                t.shape(),
                shape
            )));
        }
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((t.shape().to_vec(), values))
    }

    fn floats(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EdgeError> {
        Ok(self.floats_any(name, shape)?.1)
    }

    /// A convolution's weight (out, in, k^d) with `in` channels and kernel `k`: its values and
    /// output channels, recorded for the model tag.
    fn conv_weight(
        &self,
        name: &str,
        c_in: usize,
        kernel: usize,
        values: &mut BTreeMap<String, Vec<f32>>,
    ) -> Result<(Vec<f32>, usize), EdgeError> {
        let key = format!("{name}.weight");
        let mut shape = vec![0, c_in];
        shape.extend(std::iter::repeat_n(kernel, self.dims));
        let (shape, w) = self.floats_any(&key, &shape)?;
        values.insert(key, w.clone());
        Ok((w, shape[0]))
    }

    /// A tensor of `len` values, recorded for the model tag.
    fn vector(
        &self,
        name: &str,
        len: usize,
        values: &mut BTreeMap<String, Vec<f32>>,
    ) -> Result<Vec<f32>, EdgeError> {
        let v = self.floats(name, &[len])?;
        values.insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn compressor(&self, sizes: &Sizes) -> Result<(Compressor, BTreeMap<String, Vec<f32>>), EdgeError> {
        if !sizes.downsample.is_power_of_two() {
            return Err((self.format)(format!(
                "{META_CONFIG}: downsampling factor {} is not a power of two",
                sizes.downsample
            )));
        }
        let (p, dims) = (COMPRESSOR_PREFIX, self.dims);
        let mut values = BTreeMap::new();
        let (w, width) = self.conv_weight(&format!("{p}stem.conv"), sizes.in_channels, 3, &mut values)?;
        let bias = self.vector(&format!("{p}stem.conv.bias"), width, &mut values)?;
        let mut layers = vec![Conv::stem(w, bias, sizes.in_channels, dims)?];
        let mut width = width;
        for i in 0..sizes.downsample.trailing_zeros() {
            let (w, next) = self.conv_weight(&format!("{p}down{i}.conv"), width, 4, &mut values)?;
            let weight = self.vector(&format!("{p}down{i}.bn.weight"), next, &mut values)?;
            let bias = self.vector(&format!("{p}down{i}.bn.bias"), next, &mut values)?;
            // Running statistics are buffers, not trained parameters: outside the tag.
            let mean = self.floats(&format!("{p}down{i}.bn.running_mean"), &[next])?;
            let var = self.floats(&format!("{p}down{i}.bn.running_var"), &[next])?;
            layers.push(Conv::halving(w, width, dims, [&weight, &bias, &mean, &var])?);
            width = next;
        }
        let (w, k) = self.conv_weight(&format!("{p}head"), width, 1, &mut values)?;
        if k != sizes.code_channels {
            return Err((self.format)(format!(
                "tensor {p}head.weight has {k} output channels, {META_CONFIG} says {} code channels",
                sizes.code_channels
            )));
        }
        let bias = self.vector(&format!("{p}head.bias"), k, &mut values)?;
        layers.push(Conv::head(w, bias, width, dims)?);
        Ok((Compressor { layers }, values))
    }
}
