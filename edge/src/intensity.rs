//! Intensities of a volume as C sees them, per modality, the same on the edge and in training:
//! CT clipped to a window and scaled to [0, 1] (the window by default the 0.5-99.5 percentiles
//! of the training foreground, as nnU-Net takes it), MR z-scored per volume. And the label
//! map that turns a dataset's classes into the ones an Experiment asks for.

use std::collections::BTreeMap;

/// How a modality's intensities are normalised.
#[derive(Clone, Debug, PartialEq)]
pub enum Intensity {
    /// Clipped to [low, high], then scaled to [0, 1].
    Ct { low: f32, high: f32 },
    /// Minus the volume's mean, over its standard deviation.
    Mr,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IntensityError {
    #[error("no foreground voxel in the training volumes: the CT window cannot be taken from it")]
    NoForeground,
    #[error("CT window [{low}, {high}] is empty")]
    EmptyWindow { low: f32, high: f32 },
    #[error("percentiles {low}-{high} are not 0 <= low < high <= 100")]
    BadPercentiles { low: f64, high: f64 },
    #[error("voxel {index} has label {label}, which the label map does not name")]
    Unmapped { index: usize, label: u8 },
}

/// The `low`-th and `high`-th percentiles of the foreground (label > 0) intensities of the
/// training volumes (image voxels with their labels), nnU-Net's CT window.
pub fn foreground_window(
    volumes: &[(&[f32], &[u8])],
    low: f64,
    high: f64,
) -> Result<Intensity, IntensityError> {
    if !(0.0..100.0).contains(&low) || !(low..=100.0).contains(&high) || low == high {
        return Err(IntensityError::BadPercentiles { low, high });
    }
    let mut foreground: Vec<f32> = volumes
        .iter()
        .flat_map(|(v, l)| v.iter().zip(l.iter()).filter(|(_, &l)| l > 0).map(|(&v, _)| v))
        .filter(|v| v.is_finite())
        .collect();
    if foreground.is_empty() {
        return Err(IntensityError::NoForeground);
    }
    let rank = |p: f64| ((p / 100.0) * (foreground.len() - 1) as f64).round() as usize;
    let (lo, hi) = (rank(low), rank(high));
    let low_value = *foreground.select_nth_unstable_by(lo, f32::total_cmp).1;
    let high_value = *foreground.select_nth_unstable_by(hi, f32::total_cmp).1;
    if high_value <= low_value {
        return Err(IntensityError::EmptyWindow {
            low: low_value,
            high: high_value,
        });
    }
    Ok(Intensity::Ct {
        low: low_value,
        high: high_value,
    })
}

impl Intensity {
    /// Normalises a volume's voxels in place.
    pub fn apply(&self, voxels: &mut [f32]) {
        match *self {
            Intensity::Ct { low, high } => {
                let scale = 1.0 / (high - low);
                for v in voxels.iter_mut() {
                    *v = (v.clamp(low, high) - low) * scale;
                }
            }
            Intensity::Mr => {
                let n = voxels.len().max(1) as f64;
                let mean = voxels.iter().map(|&v| v as f64).sum::<f64>() / n;
                let var = voxels.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
                // A constant volume stays at 0 rather than dividing by zero.
                let scale = if var > 0.0 { 1.0 / var.sqrt() } else { 0.0 };
                for v in voxels.iter_mut() {
                    *v = ((*v as f64 - mean) * scale) as f32;
                }
            }
        }
    }
}

/// Each voxel's class through `map` (a dataset's label -> the Experiment's class); a label the
/// map does not name is an error, never a silent background.
pub fn remap_labels(labels: &mut [u8], map: &BTreeMap<u8, u8>) -> Result<(), IntensityError> {
    let mut table = [None; 256];
    for (&from, &to) in map {
        table[from as usize] = Some(to);
    }
    for (index, l) in labels.iter_mut().enumerate() {
        *l = table[*l as usize].ok_or(IntensityError::Unmapped { index, label: *l })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ct_window_comes_from_the_foreground_and_scales_to_unit_range() {
        // Background at -1000 (air), foreground 0..=1000 in steps of 1.
        let image: Vec<f32> = (0..=1000).map(|v| v as f32).chain([-1000.0; 500]).collect();
        let labels: Vec<u8> = (0..=1000).map(|_| 1).chain([0; 500]).collect();
        let window = foreground_window(&[(&image, &labels)], 0.5, 99.5).unwrap();
        assert_eq!(
            window,
            Intensity::Ct {
                low: 5.0,
                high: 995.0
            }
        );
        let mut v = vec![-1000.0, 5.0, 500.0, 995.0, 3000.0];
        window.apply(&mut v);
        assert_eq!(v, [0.0, 0.0, 0.5, 1.0, 1.0]);
        assert_eq!(
            foreground_window(&[(&image, &[0; 1501])], 0.5, 99.5),
            Err(IntensityError::NoForeground)
        );
        assert!(foreground_window(&[(&image, &labels)], 99.5, 0.5).is_err());
    }

    #[test]
    fn mr_is_z_scored_per_volume() {
        let mut v = vec![1.0, 2.0, 3.0, 4.0];
        Intensity::Mr.apply(&mut v);
        let mean: f32 = v.iter().sum::<f32>() / 4.0;
        let var: f32 = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5, "{v:?}");
        let mut flat = vec![7.0; 3];
        Intensity::Mr.apply(&mut flat);
        assert_eq!(flat, [0.0; 3]);
    }

    #[test]
    fn labels_are_remapped_and_unnamed_ones_refused() {
        // MM-WHS: myocardium (1) and LV (3) kept as classes 1 and 2, the rest background.
        let map: BTreeMap<u8, u8> = [(0, 0), (1, 1), (2, 0), (3, 2), (4, 0), (5, 0), (6, 0), (7, 0)].into();
        let mut labels = vec![0, 1, 3, 7, 2];
        remap_labels(&mut labels, &map).unwrap();
        assert_eq!(labels, [0, 1, 2, 0, 0]);
        let mut outside = vec![0, 9];
        assert_eq!(
            remap_labels(&mut outside, &map),
            Err(IntensityError::Unmapped { index: 1, label: 9 })
        );
    }
}
