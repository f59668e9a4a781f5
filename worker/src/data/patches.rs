//! Training patches of 3D volumes, as nnU-Net draws them: random boxes of a fixed size, a share
//! of them (a third by default) centred on a labelled voxel so that small structures are seen
//! often enough, each with random flips. Pure: sides and labels in, boxes out.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// At most this many foreground voxels are kept per volume to centre patches on (drawn evenly
/// by reservoir sampling): a 512 x 512 x 300 CT has tens of millions.
pub const MAX_FOREGROUND_LOCATIONS: usize = 10_000;

/// One patch: its corner (z, y, x) in the volume, and the axes to flip. A volume smaller than
/// the patch along an axis gets corner 0 there; the caller pads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Patch {
    pub corner: [usize; 3],
    pub flip: [bool; 3],
    /// Drawn around a labelled voxel.
    pub foreground: bool,
}

/// The labelled voxels of one volume a sampler centres patches on.
#[derive(Clone, Debug)]
pub struct ForegroundLocations {
    sides: [usize; 3],
    /// Voxel indices (z-major), at most `MAX_FOREGROUND_LOCATIONS`.
    at: Vec<u32>,
}

impl ForegroundLocations {
    /// Keeps an even sample of the voxels whose label is not 0.
    pub fn new(sides: [usize; 3], labels: &[u8], rng: &mut ChaCha8Rng) -> ForegroundLocations {
        let mut at: Vec<u32> = Vec::new();
        // `seen` labelled voxels came before this one.
        for (seen, (i, _)) in labels.iter().enumerate().filter(|(_, &l)| l != 0).enumerate() {
            if at.len() < MAX_FOREGROUND_LOCATIONS {
                at.push(i as u32);
            } else {
                let j = rng.random_range(0..=seen);
                if j < MAX_FOREGROUND_LOCATIONS {
                    at[j] = i as u32;
                }
            }
        }
        ForegroundLocations { sides, at }
    }

    fn voxel(&self, k: usize) -> [usize; 3] {
        let i = self.at[k] as usize;
        let [_, h, w] = self.sides;
        [i / (h * w), (i / w) % h, i % w]
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// Draws patches of size `patch` (z, y, x).
#[derive(Clone, Copy, Debug)]
pub struct PatchSampler {
    pub patch: [usize; 3],
    /// Share of patches centred on a labelled voxel (nnU-Net: a third).
    pub foreground_share: f64,
    /// Flip each axis with probability one half.
    pub flips: bool,
}

impl PatchSampler {
    pub fn new(patch: [usize; 3]) -> PatchSampler {
        PatchSampler {
            patch,
            foreground_share: 1.0 / 3.0,
            flips: true,
        }
    }

    /// The `k`-th patch of a batch: patches k with k mod 3 == 2 (for a third) are centred on a
    /// labelled voxel when the volume has one, so that every batch holds its share exactly.
    pub fn draw(&self, k: usize, fg: &ForegroundLocations, rng: &mut ChaCha8Rng) -> Patch {
        let sides = fg.sides;
        let period = (1.0 / self.foreground_share.clamp(1e-6, 1.0)).round().max(1.0) as usize;
        let centred = !fg.is_empty() && k % period == period - 1;
        let mut corner = [0usize; 3];
        if centred {
            let v = fg.voxel(rng.random_range(0..fg.at.len()));
            for a in 0..3 {
                // Centre the patch on the voxel, then keep it inside the volume.
                let room = sides[a].saturating_sub(self.patch[a]);
                corner[a] = v[a].saturating_sub(self.patch[a] / 2).min(room);
            }
        } else {
            for a in 0..3 {
                let room = sides[a].saturating_sub(self.patch[a]);
                corner[a] = rng.random_range(0..=room);
            }
        }
        let flip = [0, 1, 2].map(|_| self.flips && rng.random_bool(0.5));
        Patch {
            corner,
            flip,
            foreground: centred,
        }
    }
}

/// The voxels and labels of `patch` (sides `size`) cut from a volume (sides `sides`, z-major),
/// flipped as the patch says. Where the patch reaches past the volume (a volume smaller than
/// the patch), voxels are `pad` and labels background.
pub fn extract(
    voxels: &[f32],
    labels: &[u8],
    sides: [usize; 3],
    patch: &Patch,
    size: [usize; 3],
    pad: f32,
) -> (Vec<f32>, Vec<u8>) {
    let n: usize = size.iter().product();
    let mut v = Vec::with_capacity(n);
    let mut l = Vec::with_capacity(n);
    // The source coordinate along axis a of patch coordinate i, after the flip.
    let source = |a: usize, i: usize| {
        let i = if patch.flip[a] { size[a] - 1 - i } else { i };
        let at = patch.corner[a] + i;
        (at < sides[a]).then_some(at)
    };
    for z in 0..size[0] {
        for y in 0..size[1] {
            for x in 0..size[2] {
                match (source(0, z), source(1, y), source(2, x)) {
                    (Some(sz), Some(sy), Some(sx)) => {
                        let i = (sz * sides[1] + sy) * sides[2] + sx;
                        v.push(voxels[i]);
                        l.push(labels[i]);
                    }
                    _ => {
                        v.push(pad);
                        l.push(0);
                    }
                }
            }
        }
    }
    (v, l)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// A 20 x 64 x 64 volume with one small labelled box: random patches would rarely see it.
    fn small_structure() -> ([usize; 3], Vec<u8>) {
        let sides = [20, 64, 64];
        let mut labels = vec![0u8; 20 * 64 * 64];
        for z in 8..11 {
            for y in 40..44 {
                for x in 10..14 {
                    labels[(z * 64 + y) * 64 + x] = 1;
                }
            }
        }
        (sides, labels)
    }

    fn contains_foreground(p: &Patch, size: [usize; 3], sides: [usize; 3], labels: &[u8]) -> bool {
        (p.corner[0]..(p.corner[0] + size[0]).min(sides[0])).any(|z| {
            (p.corner[1]..(p.corner[1] + size[1]).min(sides[1])).any(|y| {
                (p.corner[2]..(p.corner[2] + size[2]).min(sides[2]))
                    .any(|x| labels[(z * sides[1] + y) * sides[2] + x] != 0)
            })
        })
    }

    #[test]
    fn a_third_of_the_patches_hold_the_structure_and_all_stay_inside() {
        let (sides, labels) = small_structure();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let fg = ForegroundLocations::new(sides, &labels, &mut rng);
        let sampler = PatchSampler::new([16, 32, 32]);
        let patches: Vec<Patch> = (0..300).map(|k| sampler.draw(k, &fg, &mut rng)).collect();
        let centred = patches.iter().filter(|p| p.foreground).count();
        assert_eq!(centred, 100, "every third patch");
        for p in &patches {
            for ((corner, size), side) in p.corner.iter().zip(sampler.patch).zip(sides) {
                assert!(corner + size <= side, "{p:?} leaves the volume");
            }
            if p.foreground {
                assert!(contains_foreground(p, sampler.patch, sides, &labels), "{p:?}");
            }
        }
        let holding = patches
            .iter()
            .filter(|p| contains_foreground(p, sampler.patch, sides, &labels))
            .count();
        assert!(holding >= 100, "{holding} of 300 patches hold the structure");
        let flipped = patches.iter().filter(|p| p.flip[2]).count();
        assert!((100..200).contains(&flipped), "{flipped} of 300 flipped along x");
    }

    #[test]
    fn volumes_smaller_than_the_patch_and_empty_label_maps() {
        let sides = [6, 64, 64];
        let labels = vec![0u8; 6 * 64 * 64];
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let fg = ForegroundLocations::new(sides, &labels, &mut rng);
        let sampler = PatchSampler::new([16, 32, 32]);
        for k in 0..30 {
            let p = sampler.draw(k, &fg, &mut rng);
            assert_eq!(
                p.corner[0], 0,
                "fewer slices than the patch: corner 0, the caller pads"
            );
            assert!(!p.foreground, "nothing to centre on");
        }
    }

    #[test]
    fn extraction_cuts_flips_and_pads() {
        let sides = [2, 3, 4];
        let voxels: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let labels: Vec<u8> = (0..24).map(|i| i as u8).collect();
        let plain = Patch {
            corner: [1, 1, 2],
            flip: [false; 3],
            foreground: false,
        };
        // A 2 x 2 x 2 patch at (1, 1, 2): z = 1 exists, z = 2 is padding.
        let (v, l) = extract(&voxels, &labels, sides, &plain, [2, 2, 2], -1.0);
        assert_eq!(v, vec![18.0, 19.0, 22.0, 23.0, -1.0, -1.0, -1.0, -1.0]);
        assert_eq!(l, vec![18, 19, 22, 23, 0, 0, 0, 0]);
        let flipped = Patch {
            flip: [false, false, true],
            corner: [0, 0, 0],
            foreground: false,
        };
        let (v, _) = extract(&voxels, &labels, sides, &flipped, [1, 1, 4], 0.0);
        assert_eq!(v, vec![3.0, 2.0, 1.0, 0.0], "x reversed");
    }

    #[test]
    fn foreground_locations_are_bounded_and_seeded() {
        let sides = [10, 100, 100];
        let labels = vec![1u8; 100_000];
        let take = |seed| ForegroundLocations::new(sides, &labels, &mut ChaCha8Rng::seed_from_u64(seed)).at;
        assert_eq!(take(3).len(), MAX_FOREGROUND_LOCATIONS);
        assert_eq!(take(3), take(3));
        // Reservoir sampling keeps voxels from the whole volume, not only the first ones.
        assert!(take(3).iter().any(|&i| i as usize > 90_000));
    }
}
