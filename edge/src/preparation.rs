//! How a scan is prepared for C, the same in training (the worker), on the edge and in the
//! cloud: intensities normalised per modality, then the scan reduced by whole factors (block
//! means; labels take each block's centre voxel), then padded so that C can halve it down to a
//! code and s can slide a whole patch over it. A deployable volume model carries its
//! preparation (`orchestra.volume` in the model file).

use crate::intensity::Intensity;
use crate::tiling::copy_box;

/// A model's scan preparation: intensities normalised, then reduced by whole factors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePreprocessing {
    pub intensity: Normalisation,
    /// Whole factors (z, y, x) the scans are reduced by.
    pub factor: [usize; 3],
}

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

    /// A scan (sides z, y, x) as C takes it: normalised and reduced. Returns the reduced sides.
    pub fn prepare(&self, mut voxels: Vec<f32>, sides: [usize; 3]) -> ([usize; 3], Vec<f32>) {
        if let Some(n) = self.intensity() {
            n.apply(&mut voxels);
        }
        if self.factor == [1, 1, 1] {
            (sides, voxels)
        } else {
            block_mean(&voxels, sides, self.factor)
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
