//! How a scan is prepared for C, the same in training (the worker), on the edge and in the
//! cloud: intensities normalised per modality, then the scan either reduced by whole factors
//! (block means; labels take each block's centre voxel) or resampled to a target voxel spacing
//! (`resample`), then padded so that C can halve it down to a code and s can slide a whole
//! patch over it. A deployable volume model carries its preparation (`orchestra.volume` in the
//! model file).

use orchestra_codec::volume_stream::{Reduction, VolumeGeometry};

use crate::intensity::Intensity;
use crate::resample::{resample_labels, resample_scan, resampled_sides};
use crate::tiling::copy_box;
use crate::volume::Geometry;

/// A model's scan preparation: intensities normalised, then reduced by whole factors or
/// resampled to a target spacing.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePreprocessing {
    pub intensity: Normalisation,
    /// Whole factors (z, y, x) the scans are reduced by; all 1 when `spacing` is set.
    pub factor: [usize; 3],
    /// Voxel spacing (z, y, x, mm) every scan is resampled to. Absent in model files written
    /// before resampling existed, which read as none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<[f32; 3]>,
}

/// Smallest and largest target spacing taken, in mm: beyond them a typo (metres, microns) is
/// more likely than a scan.
pub const TARGET_SPACING_MM: (f32, f32) = (0.05, 50.0);

/// Intensity normalisation, with the CT window fixed once taken from the training volumes.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Normalisation {
    /// z-scored per volume.
    Mr,
    /// Clipped to [low, high], scaled to [0, 1].
    Ct {
        low: f32,
        high: f32,
    },
    None,
}

impl VolumePreprocessing {
    /// Checks what a model file announces: factors 1..=8, a CT window with low < high.
    pub fn check(&self) -> Result<(), String> {
        if let Some(f) = self.factor.iter().find(|f| !(1..=8).contains(*f)) {
            return Err(format!("reduction factor {f} is not in 1..=8"));
        }
        if let Some(target) = self.spacing {
            if self.factor != [1, 1, 1] {
                return Err(format!(
                    "reduction factors {:?} and a target spacing {target:?}: one or the other",
                    self.factor
                ));
            }
            let (lo, hi) = TARGET_SPACING_MM;
            if let Some(s) = target.iter().find(|s| !(lo..=hi).contains(*s)) {
                return Err(format!("target spacing {s} mm is not in {lo}..={hi} mm"));
            }
        }
        if let Normalisation::Ct { low, high } = self.intensity {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(format!("CT window [{low}, {high}] is not low < high"));
            }
        }
        Ok(())
    }

    fn intensity(&self) -> Option<Intensity> {
        match self.intensity {
            Normalisation::Mr => Some(Intensity::Mr),
            Normalisation::Ct { low, high } => Some(Intensity::Ct { low, high }),
            Normalisation::None => None,
        }
    }

    /// How a volume stream states this preparation's reduction.
    pub fn reduction(&self) -> Reduction {
        match self.spacing {
            Some(target) => Reduction::Spacing(target),
            None => Reduction::Factor(self.factor.map(|f| f as u8)),
        }
    }

    /// The geometry a scan's volume stream carries: its sides and affine, and this reduction.
    pub fn stream_geometry(&self, scan: &Geometry) -> VolumeGeometry {
        VolumeGeometry {
            sides: scan.sides.map(|s| s as u32),
            reduction: self.reduction(),
            affine: scan.affine,
        }
    }

    /// Whether a stream's scan was reduced as this preparation reduces scans; if not, why.
    pub fn check_reduction(&self, stream: &Reduction) -> Result<(), String> {
        let ours = self.reduction();
        if *stream == ours {
            return Ok(());
        }
        let say = |r: &Reduction| match r {
            Reduction::Factor(f) => format!("reduced by whole factors {f:?}"),
            Reduction::Spacing(s) => format!("resampled to {s:?} mm"),
        };
        Err(format!(
            "the scan was {} but this model takes scans {}",
            say(stream),
            say(&ours)
        ))
    }

    /// Sides of a scan (sides z, y, x, voxel spacing in mm) as C takes it.
    pub fn prepared_sides(&self, sides: [usize; 3], spacing: [f32; 3]) -> [usize; 3] {
        match self.spacing {
            Some(target) => resampled_sides(sides, spacing, target),
            None => reduced_sides(sides, self.factor),
        }
    }

    /// A scan (sides z, y, x, voxel spacing in mm) as C takes it: normalised, then reduced or
    /// resampled. Returns the prepared sides.
    pub fn prepare(
        &self,
        mut voxels: Vec<f32>,
        sides: [usize; 3],
        spacing: [f32; 3],
    ) -> ([usize; 3], Vec<f32>) {
        if let Some(n) = self.intensity() {
            n.apply(&mut voxels);
        }
        let to = self.prepared_sides(sides, spacing);
        if to == sides {
            (sides, voxels)
        } else if self.spacing.is_some() {
            (to, resample_scan(&voxels, sides, to))
        } else {
            block_mean(&voxels, sides, self.factor)
        }
    }

    /// A scan's labels on the prepared voxels.
    pub fn prepare_labels(
        &self,
        labels: &[u8],
        sides: [usize; 3],
        spacing: [f32; 3],
    ) -> ([usize; 3], Vec<u8>) {
        let to = self.prepared_sides(sides, spacing);
        if to == sides {
            (sides, labels.to_vec())
        } else if self.spacing.is_some() {
            (to, resample_labels(labels, sides, to))
        } else {
            block_centre(labels, sides, self.factor)
        }
    }

    /// Labels predicted on the prepared voxels (`prepared` sides) brought back to the scan's
    /// `sides`: each scan voxel takes the label of the prepared voxel it lies in (whole
    /// factors) or nearest to (resampled).
    pub fn restore_labels(&self, labels: &[u8], prepared: [usize; 3], sides: [usize; 3]) -> Vec<u8> {
        if prepared == sides {
            labels.to_vec()
        } else if self.spacing.is_some() {
            resample_labels(labels, prepared, sides)
        } else {
            expand_labels(labels, prepared, sides, self.factor)
        }
    }
}

/// Sides after reducing by `factor` (partial blocks at the end count).
pub fn reduced_sides(sides: [usize; 3], factor: [usize; 3]) -> [usize; 3] {
    [0, 1, 2].map(|a| sides[a].div_ceil(factor[a]))
}

/// Mean of each block of `factor` voxels (partial blocks: the mean of the voxels they have).
pub fn block_mean(voxels: &[f32], sides: [usize; 3], factor: [usize; 3]) -> ([usize; 3], Vec<f32>) {
    let out = reduced_sides(sides, factor);
    let mut sums = vec![0f64; out.iter().product()];
    let mut counts = vec![0u32; sums.len()];
    for z in 0..sides[0] {
        for y in 0..sides[1] {
            for x in 0..sides[2] {
                let o = ((z / factor[0]) * out[1] + y / factor[1]) * out[2] + x / factor[2];
                sums[o] += voxels[(z * sides[1] + y) * sides[2] + x] as f64;
                counts[o] += 1;
            }
        }
    }
    let v = sums
        .iter()
        .zip(&counts)
        .map(|(s, &c)| (s / c as f64) as f32)
        .collect();
    (out, v)
}

/// The label at (or, for a partial block, nearest to) each block's centre.
pub fn block_centre(labels: &[u8], sides: [usize; 3], factor: [usize; 3]) -> ([usize; 3], Vec<u8>) {
    let out = reduced_sides(sides, factor);
    let at = |a: usize, i: usize| (i * factor[a] + factor[a] / 2).min(sides[a] - 1);
    let mut v = Vec::with_capacity(out.iter().product());
    for z in 0..out[0] {
        for y in 0..out[1] {
            for x in 0..out[2] {
                v.push(labels[(at(0, z) * sides[1] + at(1, y)) * sides[2] + at(2, x)]);
            }
        }
    }
    (out, v)
}

/// Each source voxel takes the label of the block it fell in: a prediction at training
/// resolution brought back to the scan's.
pub fn expand_labels(
    small: &[u8],
    small_sides: [usize; 3],
    sides: [usize; 3],
    factor: [usize; 3],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(sides.iter().product());
    for z in 0..sides[0] {
        for y in 0..sides[1] {
            for x in 0..sides[2] {
                out.push(
                    small
                        [((z / factor[0]) * small_sides[1] + y / factor[1]) * small_sides[2] + x / factor[2]],
                );
            }
        }
    }
    out
}

/// `side` rounded up to a multiple of `f`, and to at least `patch`: what a prepared scan is
/// padded to along one axis before C.
pub fn padded_side(side: usize, f: usize, patch: usize) -> usize {
    side.div_ceil(f).max(1).saturating_mul(f).max(patch)
}

/// Copies a z-major volume into a larger one, zeros beyond its sides.
pub fn pad(voxels: &[f32], sides: [usize; 3], to: [usize; 3]) -> Vec<f32> {
    if sides == to {
        return voxels.to_vec();
    }
    let mut out = vec![0f32; to.iter().product()];
    copy_box(voxels, sides, [0; 3], &mut out, to, [0; 3], sides, 1);
    out
}

/// The part of a z-major volume (sides `from`) inside `sides`.
pub fn crop<T: Copy + Default>(values: &[T], from: [usize; 3], sides: [usize; 3]) -> Vec<T> {
    let mut out = vec![T::default(); sides.iter().product()];
    copy_box(values, from, [0; 3], &mut out, sides, [0; 3], sides, 1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_and_expanding_back() {
        // 3 x 4 x 5 volume, factors 1 x 2 x 2: partial blocks along x.
        let sides = [3, 4, 5];
        let voxels: Vec<f32> = (0..60).map(|i| i as f32).collect();
        let (s, v) = block_mean(&voxels, sides, [1, 2, 2]);
        assert_eq!(s, [3, 2, 3]);
        // First block: voxels (0,0,0),(0,0,1),(0,1,0),(0,1,1) = 0, 1, 5, 6.
        assert_eq!(v[0], 3.0);
        // Last block of row 0 is partial: x = 4 only, y = 0, 1: voxels 4 and 9.
        assert_eq!(v[2], 6.5);
        let labels: Vec<u8> = (0..60).map(|i| (i % 7) as u8).collect();
        let (s2, small) = block_centre(&labels, sides, [1, 2, 2]);
        assert_eq!(s2, s);
        // Block (0, 0, 0)'s centre is voxel (0, 1, 1) = 6.
        assert_eq!(small[0], 6);
        let back = expand_labels(&small, s2, sides, [1, 2, 2]);
        assert_eq!(back.len(), 60);
        assert_eq!(back[5 + 4], small[2], "voxel (0, 1, 4) lies in block (0, 0, 2)");
        assert_eq!(back[59], small[17], "voxel (2, 3, 4) lies in block (2, 1, 2)");
        // Factor 1 is the identity.
        assert_eq!(expand_labels(&labels, sides, sides, [1, 1, 1]), labels);
    }

    #[test]
    fn a_target_spacing_is_checked_and_older_model_files_read_without_one() {
        let old: VolumePreprocessing =
            serde_json::from_str(r#"{"intensity":"mr","factor":[1,2,2]}"#).unwrap();
        assert_eq!(old.spacing, None);
        assert_eq!(old.reduction(), Reduction::Factor([1, 2, 2]));
        assert!(!serde_json::to_string(&old).unwrap().contains("spacing"));
        let resampled = VolumePreprocessing {
            intensity: Normalisation::Mr,
            factor: [1, 1, 1],
            spacing: Some([10.0, 3.0, 3.0]),
        };
        assert_eq!(resampled.check(), Ok(()));
        let back: VolumePreprocessing =
            serde_json::from_str(&serde_json::to_string(&resampled).unwrap()).unwrap();
        assert_eq!(back, resampled);
        let both = VolumePreprocessing {
            factor: [1, 2, 2],
            ..resampled.clone()
        };
        assert!(both.check().unwrap_err().contains("one or the other"));
        let zero = VolumePreprocessing {
            spacing: Some([10.0, 0.0, 3.0]),
            ..resampled.clone()
        };
        assert!(zero.check().unwrap_err().contains("target spacing 0 mm"));
        // A stream reduced otherwise is refused naming both reductions.
        let e = resampled.check_reduction(&old.reduction()).unwrap_err();
        assert!(
            e.contains("whole factors [1, 2, 2]") && e.contains("resampled to [10.0, 3.0, 3.0] mm"),
            "{e}"
        );
        assert_eq!(
            resampled.check_reduction(&Reduction::Spacing([10.0, 3.0, 3.0])),
            Ok(())
        );
        // Labels go to the prepared grid and come back on the scan's.
        let (sides, spacing) = ([4, 9, 7], [10.0, 1.5, 1.5]);
        assert_eq!(resampled.prepared_sides(sides, spacing), [4, 5, 4]);
        let labels: Vec<u8> = (0..252).map(|i| (i % 3) as u8).collect();
        let (small_sides, small) = resampled.prepare_labels(&labels, sides, spacing);
        assert_eq!((small_sides, small.len()), ([4, 5, 4], 80));
        assert_eq!(resampled.restore_labels(&small, small_sides, sides).len(), 252);
    }

    #[test]
    fn padding_and_cropping_are_inverse() {
        assert_eq!(padded_side(10, 16, 16), 16);
        assert_eq!(padded_side(40, 16, 16), 48);
        assert_eq!(padded_side(40, 1, 64), 64);
        let sides = [2, 3, 4];
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let to = [3, 4, 8];
        let p = pad(&v, sides, to);
        assert_eq!(p.len(), 96);
        assert_eq!(p[8 + 1], 5.0, "voxel (0, 1, 1)");
        assert_eq!(p[3 * 8..4 * 8], [0.0; 8], "row y = 3 is padding");
        assert_eq!(crop(&p, to, sides), v);
    }
}
