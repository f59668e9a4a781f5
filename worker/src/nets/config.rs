//! Network sizes: the `small` and `paper` presets, resolved against the trial's model spec and
//! the dataset's channels and classes.

use orchestra_api::{ModelSpec, Preset};

use super::layers::Spatial;

/// Every size the networks need, fully resolved.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    pub spatial: Spatial,
    pub input_size: i64,
    /// Sides of one network input along each spatial axis (z, y, x for volumes): `input_size`
    /// repeated, or a volume's training patch.
    pub sides: Vec<i64>,
    pub in_channels: i64,
    /// Classes including background; the networks output 1 channel when this is 2.
    pub classes: i64,
    /// C: width of the first layer, cap on the width, downsampling factor f, code channels K.
    pub c_width: i64,
    pub c_max_width: i64,
    pub downsample: i64,
    pub code_channels: i64,
    /// g: width at full resolution, cap on the width, channels of the map handed to s.
    pub g_width: i64,
    pub g_max_width: i64,
    pub g_out: i64,
    /// s: base width, number of downsamplings, residual blocks per scale (SegAN's segmentor;
    /// the 3D U-Net has two conv blocks per level instead).
    pub s_width: i64,
    pub s_depth: i64,
    pub s_res_blocks: i64,
    /// D: base width, number of strided blocks.
    pub d_width: i64,
    pub d_depth: i64,
}

impl NetConfig {
    pub fn resolve(model: &ModelSpec, in_channels: usize, classes: usize) -> NetConfig {
        let spatial = Spatial::from_dims(model.dims).unwrap_or(Spatial::Two);
        let sides: Vec<i64> = model.sides().into_iter().map(i64::from).collect();
        let mut c = match model.preset {
            // CPU-sized: trains in minutes on two cores.
            Preset::Small => NetConfig {
                spatial,
                input_size: model.input_size as i64,
                sides: sides.clone(),
                in_channels: in_channels as i64,
                classes: classes as i64,
                c_width: 8,
                c_max_width: 32,
                downsample: orchestra_api::DEFAULT_DOWNSAMPLE as i64,
                code_channels: 3,
                g_width: 8,
                g_max_width: 32,
                g_out: 1,
                s_width: 8,
                s_depth: 3,
                s_res_blocks: 1,
                d_width: 8,
                d_depth: 3,
            },
            // The paper's sizes: C about 1.4 M parameters, SegAN's 64-wide segmentor and critic.
            Preset::Paper => NetConfig {
                spatial,
                input_size: model.input_size as i64,
                sides: sides.clone(),
                in_channels: in_channels as i64,
                classes: classes as i64,
                c_width: 32,
                c_max_width: 224,
                downsample: orchestra_api::DEFAULT_DOWNSAMPLE as i64,
                code_channels: 3,
                g_width: 32,
                g_max_width: 256,
                g_out: 1,
                s_width: 64,
                s_depth: 4,
                s_res_blocks: 2,
                d_width: 64,
                d_depth: 4,
            },
        };
        if spatial == Spatial::Three && model.preset == Preset::Paper {
            // nnU-Net's 3D U-Net: base width 32 (capped at 320), five resolution levels.
            c.s_width = 32;
        }
        if let Some(f) = model.downsample {
            c.downsample = f as i64;
        }
        if let Some(k) = model.code_channels {
            c.code_channels = k as i64;
        }
        if let Some(w) = model.width {
            c.s_width = w as i64;
            c.d_width = w as i64;
        }
        if let Some(d) = model.depth {
            c.s_depth = d as i64;
            c.d_depth = d as i64;
        }
        c
    }

    /// Output channels of S (and input channels of D): one probability map for binary tasks,
    /// one per class otherwise.
    pub fn out_channels(&self) -> i64 {
        if self.classes == 2 {
            1
        } else {
            self.classes
        }
    }

    /// Sides of the code in bits along each spatial axis.
    pub fn code_sides(&self) -> Vec<i64> {
        self.sides.iter().map(|s| s / self.downsample).collect()
    }

    /// Bits per input before entropy coding.
    pub fn code_bits(&self) -> i64 {
        self.code_channels * self.code_sides().iter().product::<i64>()
    }

    /// Pixels (voxels) per input.
    pub fn pixels(&self) -> i64 {
        self.sides.iter().product()
    }
}
