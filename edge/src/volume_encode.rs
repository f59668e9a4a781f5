//! The edge's side of a volume: a scan prepared as the model was trained (intensities, then
//! whole reduction factors or resampling to a spacing), padded so that C halves it down to a
//! code and the cloud can slide a whole patch over it, coded into one bitstream (C run whole, or in tiles for large scans: the same
//! code either way), and sent behind its geometry so that the cloud writes a label volume on
//! the scan's own voxels.

use orchestra_codec::volume_stream::wrap;

use crate::layers::Planes;
use crate::model_file::{EdgeError, EdgeModel};
use crate::preparation::{pad, padded_side, VolumePreprocessing};
use crate::tiling::Tiling;
use crate::volume::Volume;

/// A volume's stream and what went into it.
#[derive(Clone, Debug)]
pub struct VolumeStream {
    /// Geometry, then the code's bitstream.
    pub bytes: Vec<u8>,
    /// Bytes of the code's bitstream alone (its header and check value included).
    pub code_bytes: usize,
    /// Voxels of the scan as acquired, the denominator of its bpp.
    pub voxels: usize,
}

/// A scan prepared as the model was trained, and the sides C runs on.
#[derive(Clone, Debug)]
pub struct PreparedScan {
    /// Normalised, then reduced or resampled (z-major).
    pub voxels: Vec<f32>,
    pub sides: [usize; 3],
    /// `sides` padded to whole code cells and at least the training patch (zeros beyond the
    /// voxels).
    pub input_sides: [usize; 3],
}

impl EdgeModel {
    /// How this volume model prepares a scan; an error for an image model.
    fn volume_preparation(&self) -> Result<&VolumePreprocessing, EdgeError> {
        match (&self.volume, self.dims) {
            (Some(p), 3) => Ok(p),
            _ => Err(EdgeError::NotVolumeModel {
                dims: self.dims,
                prepared: self.volume.is_some(),
            }),
        }
    }

    /// A scan as C takes it: prepared (intensities, then whole reduction factors or resampling
    /// to a spacing) with the padded sides C runs on.
    pub fn prepare_scan(&self, scan: Volume) -> Result<PreparedScan, EdgeError> {
        let prep = self.volume_preparation()?;
        let (sides, voxels) = prep.prepare(scan.voxels, scan.geometry.sides, scan.geometry.affine_spacing());
        let f = self.downsample;
        Ok(PreparedScan {
            voxels,
            sides,
            input_sides: std::array::from_fn(|a| padded_side(sides[a], f, self.sides[a])),
        })
    }

    /// A scan -> its volume stream, C run whole or in tiles as `Tiling::default()` decides.
    pub fn encode_volume(&self, scan: Volume) -> Result<VolumeStream, EdgeError> {
        self.encode_volume_with(scan, Tiling::default())
    }

    /// A scan -> its volume stream: C plane by plane where the direct kernels cover it on this
    /// CPU; elsewhere scans above `tiling`'s limit are coded tile by tile (the same code as in
    /// one piece, in bounded memory).
    pub fn encode_volume_with(&self, scan: Volume, tiling: Tiling) -> Result<VolumeStream, EdgeError> {
        let geometry = self.volume_preparation()?.stream_geometry(&scan.geometry);
        let source = scan.geometry.sides;
        let PreparedScan {
            voxels,
            sides,
            input_sides: padded,
        } = self.prepare_scan(scan)?;
        let f = self.downsample;
        let code = match self.code_streamed(&voxels, sides, padded) {
            // Plane by plane: no padded copy of the scan, no tiles.
            Some(streamed) => {
                let (shape, bits, _) = streamed?;
                self.codec.encode(&shape, &bits)?
            }
            None => {
                let planes = Planes {
                    channels: 1,
                    sides: padded,
                    data: pad(&voxels, sides, padded),
                };
                drop(voxels);
                match tiling.tile_cells(padded, f) {
                    None => self.encode(&planes)?,
                    Some(tile) => {
                        let (shape, bits) = self.code_tiled(&planes, tile)?;
                        self.codec.encode(&shape, &bits)?
                    }
                }
            }
        };
        Ok(VolumeStream {
            bytes: wrap(&geometry, &code),
            code_bytes: code.len(),
            voxels: source.iter().product(),
        })
    }
}
