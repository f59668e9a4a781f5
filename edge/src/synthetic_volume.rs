//! Seeded synthetic cardiac volumes for tests and CI without real data (`synthetic://heart3d`):
//! a blood pool inside a myocardium-like wall, both smoothly deformed ellipsoids in physical
//! millimetres (so an anisotropic spacing gives thick slices, as in cardiac MR), with a
//! multiplicative bias field and Gaussian noise. Classes follow HVSMR: 0 background,
//! 1 myocardium, 2 blood pool. Same parameters, same volume, on every machine.

use crate::volume::{Geometry, LabelVolume, Volume};

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct Heart3d {
    /// Sides (z, y, x).
    pub sides: [usize; 3],
    /// Voxel spacing (z, y, x) in millimetres.
    pub spacing: [f32; 3],
    pub seed: u64,
    /// Standard deviation of the Gaussian noise, in intensity units (tissue contrast is ~0.5).
    pub noise: f32,
    /// Strength of the multiplicative bias field (0: none; 0.3: intensities vary by up to ±30 %).
    pub bias: f32,
}

impl Heart3d {
    pub fn new(sides: [usize; 3], seed: u64) -> Heart3d {
        Heart3d {
            sides,
            spacing: [2.5, 1.0, 1.0],
            seed,
            noise: 0.05,
            bias: 0.25,
        }
    }
}

pub const BACKGROUND: u8 = 0;
pub const MYOCARDIUM: u8 = 1;
pub const BLOOD_POOL: u8 = 2;

/// SplitMix64: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = self.unit().max(1e-7);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// A smooth field: a few low-frequency waves over the volume's physical extent.
struct Waves(Vec<([f32; 3], f32, f32)>);

impl Waves {
    fn new(rng: &mut Rng, count: usize, extent: [f32; 3], amplitude: f32) -> Waves {
        Waves(
            (0..count)
                .map(|_| {
                    let k =
                        [0, 1, 2].map(|a| rng.range(-1.5, 1.5) * std::f32::consts::TAU / extent[a].max(1.0));
                    (
                        k,
                        rng.range(0.0, std::f32::consts::TAU),
                        amplitude * rng.range(0.5, 1.0),
                    )
                })
                .collect(),
        )
    }

    fn at(&self, p: [f32; 3]) -> f32 {
        self.0
            .iter()
            .map(|(k, phase, a)| a * (k[0] * p[0] + k[1] * p[1] + k[2] * p[2] + phase).sin())
            .sum()
    }
}

/// Generates the scan and its label map.
pub fn heart3d(h: &Heart3d) -> (Volume, LabelVolume) {
    let mut rng = Rng(h.seed ^ 0x0048_4541_5254_3344);
    let [nz, ny, nx] = h.sides;
    let extent = [0, 1, 2].map(|a| h.sides[a] as f32 * h.spacing[a]);
    let centre = [0, 1, 2].map(|a| extent[a] * rng.range(0.42, 0.58));
    // The blood pool's radii (z, y, x) and the wall's thickness, in mm, from the smaller
    // in-plane extent so that the heart fits the field of view.
    let inplane = extent[1].min(extent[2]);
    let radii = [
        (extent[0] * rng.range(0.18, 0.26)).max(h.spacing[0] * 1.5),
        inplane * rng.range(0.14, 0.2),
        inplane * rng.range(0.14, 0.2),
    ];
    // At least one and a half voxels thick along every axis, so that it closes on the grid.
    let coarsest = h.spacing.iter().copied().fold(0.0f32, f32::max);
    let wall = (inplane * rng.range(0.05, 0.08)).max(1.5 * coarsest);
    let deform = [0, 1, 2].map(|_| Waves::new(&mut rng, 3, extent, inplane * 0.03));
    // Four waves of at most bias/4 each: intensities vary by at most ±bias.
    let bias = Waves::new(&mut rng, 4, extent, h.bias / 4.0);
    let texture = Waves::new(
        &mut rng,
        6,
        [extent[0] / 4.0, extent[1] / 6.0, extent[2] / 6.0],
        0.04,
    );
    let (blood, myo, back) = (rng.range(0.75, 0.9), rng.range(0.3, 0.42), rng.range(0.1, 0.18));

    let mut voxels = Vec::with_capacity(nz * ny * nx);
    let mut labels = Vec::with_capacity(nz * ny * nx);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let p = [
                    (z as f32 + 0.5) * h.spacing[0],
                    (y as f32 + 0.5) * h.spacing[1],
                    (x as f32 + 0.5) * h.spacing[2],
                ];
                // A smoothly displaced point, then its distance in units of the pool's radii.
                let q = [0, 1, 2].map(|a| p[a] + deform[a].at(p) - centre[a]);
                let r = (0..3).map(|a| (q[a] / radii[a]).powi(2)).sum::<f32>().sqrt();
                // The wall: the same ellipsoid grown by `wall` mm along every axis.
                let r_wall = (0..3)
                    .map(|a| (q[a] / (radii[a] + wall)).powi(2))
                    .sum::<f32>()
                    .sqrt();
                let (class, tissue) = if r <= 1.0 {
                    (BLOOD_POOL, blood)
                } else if r_wall <= 1.0 {
                    (MYOCARDIUM, myo)
                } else {
                    (BACKGROUND, back + texture.at(p))
                };
                let value = tissue * (1.0 + bias.at(p)) + h.noise * rng.normal();
                labels.push(class);
                voxels.push(value);
            }
        }
    }
    let geometry = Geometry {
        sides: h.sides,
        spacing: h.spacing,
        // Voxel (x, y, z) to millimetres: the spacing on the diagonal.
        affine: [
            [h.spacing[2], 0.0, 0.0, 0.0],
            [0.0, h.spacing[1], 0.0, 0.0],
            [0.0, 0.0, h.spacing[0], 0.0],
        ],
    };
    (
        Volume {
            geometry: geometry.clone(),
            voxels,
        },
        LabelVolume { geometry, labels },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(sides: [usize; 3], z: usize, y: usize, x: usize) -> usize {
        (z * sides[1] + y) * sides[2] + x
    }

    #[test]
    fn the_same_seed_gives_the_same_volume_and_another_seed_another() {
        let h = Heart3d::new([8, 40, 48], 3);
        assert_eq!(heart3d(&h), heart3d(&h));
        let other = heart3d(&Heart3d { seed: 4, ..h.clone() });
        assert_ne!(other.1.labels, heart3d(&h).1.labels);
    }

    /// Nested shells: both structures present in plausible shares, the blood pool never touches
    /// the background (the wall surrounds it), and the pool is brighter than the wall, the wall
    /// than the background, under noise and bias.
    #[test]
    fn a_blood_pool_inside_a_wall_with_the_contrast_of_cardiac_mr() {
        for seed in 0..6 {
            let h = Heart3d::new([10, 48, 56], seed);
            let (scan, labels) = heart3d(&h);
            let s = h.sides;
            let n = labels.labels.len() as f32;
            let share = |c: u8| labels.labels.iter().filter(|&&l| l == c).count() as f32 / n;
            let (pool, wall) = (share(BLOOD_POOL), share(MYOCARDIUM));
            assert!(
                (0.01..0.2).contains(&pool) && (0.01..0.2).contains(&wall),
                "seed {seed}: {pool} {wall}"
            );
            for z in 0..s[0] {
                for y in 0..s[1] {
                    for x in 0..s[2] {
                        if labels.labels[index(s, z, y, x)] != BLOOD_POOL {
                            continue;
                        }
                        let neighbours = [
                            (z.wrapping_sub(1), y, x),
                            (z + 1, y, x),
                            (z, y.wrapping_sub(1), x),
                            (z, y + 1, x),
                            (z, y, x.wrapping_sub(1)),
                            (z, y, x + 1),
                        ];
                        for (a, b, c) in neighbours {
                            if a < s[0] && b < s[1] && c < s[2] {
                                assert_ne!(
                                    labels.labels[index(s, a, b, c)],
                                    BACKGROUND,
                                    "seed {seed}: pool at the background"
                                );
                            }
                        }
                    }
                }
            }
            let mean = |c: u8| {
                let v: Vec<f32> = scan
                    .voxels
                    .iter()
                    .zip(&labels.labels)
                    .filter(|(_, &l)| l == c)
                    .map(|(v, _)| *v)
                    .collect();
                v.iter().sum::<f32>() / v.len() as f32
            };
            assert!(mean(BLOOD_POOL) > mean(MYOCARDIUM) + 0.2, "seed {seed}");
            assert!(mean(MYOCARDIUM) > mean(BACKGROUND) + 0.1, "seed {seed}");
        }
    }

    /// Thick slices: with 2.5 mm between slices and 1 mm in plane, the heart spans fewer slices
    /// than rows, as in ACDC.
    #[test]
    fn anisotropic_spacing_gives_few_thick_slices() {
        let h = Heart3d::new([12, 64, 64], 1);
        let (_, labels) = heart3d(&h);
        let s = h.sides;
        let extent = |axis: usize| {
            let hits: Vec<usize> = (0..labels.labels.len())
                .filter(|&i| labels.labels[i] != BACKGROUND)
                .map(|i| [i / (s[1] * s[2]), (i / s[2]) % s[1], i % s[2]][axis])
                .collect();
            hits.iter().max().unwrap() - hits.iter().min().unwrap() + 1
        };
        assert!(extent(0) < extent(1), "{} slices, {} rows", extent(0), extent(1));
        assert_eq!(labels.geometry.affine[2][2], 2.5);
    }
}
