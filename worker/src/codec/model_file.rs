//! A trained model packaged for deployment: C and q for the edge, g and s for the cloud, in one
//! safetensors file whose metadata holds the network sizes and variant. The critic is left
//! out (it only matters in training).

use std::collections::HashMap;
use std::path::Path;

use orchestra_api::Variant;
use tch::{Device, Kind, Tensor};

use super::deploy::{META_CONFIG, META_VARIANT, META_VOLUME};
use super::model_code::{code_rows, code_shape, codec_for};
use super::{CodeShape, Codec, CodecError};
use crate::data::volumes::VolumePreprocessing;
use crate::eval::volumes::{padded_sides, segment_code, CloudPass, CloudProfile};
use crate::nets::{Group, Model, NetConfig};
use crate::store::{from_safetensors_with_metadata, to_safetensors_with_metadata};
use orchestra_codec::volume_stream::VolumeGeometry;
use orchestra_edge::volume::spacing_of;

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("{path}: not an Orchestra model file: {reason}")]
    Format { path: String, reason: String },
    #[error("variant {0} sends raw images and has no code to compress (use D2, D3 or D4)")]
    NoCompressor(Variant),
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A volume stream that this model cannot segment (no scan preparation, or a geometry
    /// that does not fit the model or the code).
    #[error("{0}")]
    Volume(String),
}

/// Windows per call of s when a volume is segmented.
pub const VOLUME_WINDOW_BATCH: usize = 4;

/// A model ready to compress (edge) and segment bitstreams (cloud).
pub struct CompressionModel {
    pub model: Model,
    pub codec: Codec,
    /// Volume models: how a scan is prepared before C.
    pub volume: Option<VolumePreprocessing>,
}

impl CompressionModel {
    pub fn new(model: Model) -> Result<CompressionModel, ModelFileError> {
        let codec = codec_for(&model).ok_or(ModelFileError::NoCompressor(model.variant))?;
        Ok(CompressionModel {
            model,
            codec,
            volume: None,
        })
    }

    /// Writes the deployable file: every variable except the critic's, plus the metadata.
    pub fn save(model: &Model, path: &Path) -> Result<(), ModelFileError> {
        Self::save_with(model, None, path)
    }

    /// `save`, with a volume model's scan preparation.
    pub fn save_with(
        model: &Model,
        volume: Option<&VolumePreprocessing>,
        path: &Path,
    ) -> Result<(), ModelFileError> {
        if !model.variant.has_compressor() {
            return Err(ModelFileError::NoCompressor(model.variant));
        }
        let io = |reason: String| ModelFileError::Io {
            path: path.display().to_string(),
            reason,
        };
        let tensors: Vec<(String, Tensor)> = model
            .named_variables()
            .into_iter()
            .filter(|(n, _)| Group::of(n) != Some(Group::Critic))
            .collect();
        let mut meta = HashMap::from([
            (
                META_CONFIG.to_string(),
                serde_json::to_string(&model.config).expect("config serialises"),
            ),
            (META_VARIANT.to_string(), model.variant.to_string()),
        ]);
        if let Some(v) = volume {
            meta.insert(
                META_VOLUME.to_string(),
                serde_json::to_string(v).expect("preparation serialises"),
            );
        }
        let bytes = to_safetensors_with_metadata(&tensors, Some(meta)).map_err(io)?;
        // Write then rename: a half-written model file never exists under its name.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| io(e.to_string()))
    }

    pub fn load(path: &Path, device: Device) -> Result<CompressionModel, ModelFileError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ModelFileError::Io {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let format = |reason: String| ModelFileError::Format {
            path: p.clone(),
            reason,
        };
        let (tensors, meta) = from_safetensors_with_metadata(&bytes).map_err(format)?;
        let config: NetConfig = serde_json::from_str(
            meta.get(META_CONFIG)
                .ok_or_else(|| format(format!("metadata lacks {META_CONFIG}")))?,
        )
        .map_err(|e| format(format!("{META_CONFIG}: {e}")))?;
        let variant: Variant = meta
            .get(META_VARIANT)
            .ok_or_else(|| format(format!("metadata lacks {META_VARIANT}")))?
            .parse()
            .map_err(format)?;
        // The critic is not shipped: build the networks of D2 (C, g, q, s), then label the
        // model with the variant it was trained as.
        let model = Model::new(config, Variant::D2, device);
        model.load_weights(&tensors).map_err(format)?;
        model.cloud_layout();
        let mut cm = CompressionModel::new(model)?;
        cm.model.variant = variant;
        cm.volume = meta
            .get(META_VOLUME)
            .map(|v| serde_json::from_str(v).map_err(|e| format(format!("{META_VOLUME}: {e}"))))
            .transpose()?;
        if let Some(v) = &cm.volume {
            v.check().map_err(|e| format(format!("{META_VOLUME}: {e}")))?;
        }
        Ok(cm)
    }

    /// Edge side: images (N, C, H, W) in [0, 1] -> one bitstream each.
    pub fn encode(&self, images: &Tensor) -> Result<Vec<Vec<u8>>, CodecError> {
        let (_, bits) = tch::no_grad(|| self.model.encode(images, false)).expect("compressing model");
        let shape = code_shape(&bits);
        code_rows(&bits)
            .iter()
            .map(|row| self.codec.encode(&shape, row))
            .collect()
    }

    /// Cloud side: a bitstream -> class indices (spatial...) of its image.
    pub fn segment(&self, stream: &[u8]) -> Result<Tensor, CodecError> {
        let (shape, bits) = self.codec.decode(stream)?;
        Ok(self.segment_code(&shape, &bits))
    }

    /// g + s on a decoded code: class indices (spatial...).
    pub fn segment_code(&self, shape: &CodeShape, bits: &[i8]) -> Tensor {
        self.segment_codes(shape, &[bits]).squeeze_dim(0)
    }

    /// How a scan is prepared for this volume model.
    pub fn preparation(&self) -> Result<&VolumePreprocessing, ModelFileError> {
        self.volume.as_ref().ok_or_else(|| {
            ModelFileError::Volume(
                "the model file has no scan preparation (not a volume model, or exported before volumes were supported): export it again from its 3D trial".into(),
            )
        })
    }

    /// Cloud side: the label volume (class bytes at the scan's source sides, z-major) of a
    /// volume stream's decoded code, once its geometry is checked against the code and the
    /// model's scan preparation.
    pub fn segment_volume(
        &self,
        geometry: &VolumeGeometry,
        shape: &CodeShape,
        bits: &[i8],
    ) -> Result<Vec<u8>, ModelFileError> {
        self.segment_volume_with(geometry, shape, bits, CloudPass::fp32(VOLUME_WINDOW_BATCH))
            .map(|(labels, _)| labels)
    }

    /// The sides (z, y, x) of a volume stream's scan as acquired and as this model prepares it,
    /// once its reduction is checked against the model's scan preparation.
    pub fn volume_sides(
        &self,
        geometry: &VolumeGeometry,
    ) -> Result<([usize; 3], [usize; 3]), ModelFileError> {
        let prep = self.preparation()?;
        prep.check_reduction(&geometry.reduction)
            .map_err(ModelFileError::Volume)?;
        let source = geometry.sides.map(|s| s as usize);
        // The edge resampled from the affine's spacing too (`Geometry::affine_spacing`), so
        // both ends derive the same grid.
        Ok((source, prep.prepared_sides(source, spacing_of(&geometry.affine))))
    }

    /// `segment_volume` with the cloud pass's options, and where its time went.
    pub fn segment_volume_with(
        &self,
        geometry: &VolumeGeometry,
        shape: &CodeShape,
        bits: &[i8],
        pass: CloudPass,
    ) -> Result<(Vec<u8>, CloudProfile), ModelFileError> {
        let refuse = |reason: String| ModelFileError::Volume(reason);
        let prep = self.preparation()?;
        let (source, sides) = self.volume_sides(geometry)?;
        let f = self.model.config.downsample as usize;
        let expected: Vec<usize> = padded_sides(&self.model, sides).iter().map(|s| s / f).collect();
        if shape.sides != expected {
            return Err(refuse(format!(
                "the code's sides {:?} do not fit a scan of {source:?} voxels (this model codes it as {expected:?})",
                shape.sides
            )));
        }
        let mut dims = vec![1, shape.channels as i64];
        dims.extend(shape.sides.iter().map(|&s| s as i64));
        let code = Tensor::from_slice(bits)
            .to_kind(Kind::Float)
            .view(dims.as_slice())
            .to_device(self.model.vs.device());
        let (labels, profile) = segment_code(&self.model, &code, sides, pass);
        Ok((prep.restore_labels(&labels, sides, source), profile))
    }

    /// g + s on decoded codes of one shape, in one batch: class indices (N, spatial...).
    /// Inference uses BatchNorm's running statistics, so each image's labels do not depend on
    /// the others in its batch.
    pub fn segment_codes(&self, shape: &CodeShape, codes: &[&[i8]]) -> Tensor {
        let mut dims = vec![codes.len() as i64, shape.channels as i64];
        dims.extend(shape.sides.iter().map(|&s| s as i64));
        let flat: Vec<i8> = codes.iter().flat_map(|c| c.iter().copied()).collect();
        let code = Tensor::from_slice(&flat)
            .to_kind(Kind::Float)
            .view(dims.as_slice())
            .to_device(self.model.vs.device());
        let probs = tch::no_grad(|| self.model.segment_bits(&code, false));
        self.model.labels(&probs)
    }
}
