//! The networks' sizes, the one schema of a model file's `orchestra.config` (JSON). The worker
//! resolves them from a trial's model spec, writes them into every model file and reads them
//! back to rebuild the networks; the edge reads the same type to check C's tensors and shape
//! the code. Widths are i64 because libtorch takes them so; readers that index with them check
//! them first (the edge's `Sizes`).

/// Number of spatial dimensions: 2 for images, 3 for volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Spatial {
    Two,
    Three,
}

impl Spatial {
    pub fn from_dims(dims: u32) -> Option<Spatial> {
        match dims {
            2 => Some(Spatial::Two),
            3 => Some(Spatial::Three),
            _ => None,
        }
    }

    pub fn n(self) -> usize {
        match self {
            Spatial::Two => 2,
            Spatial::Three => 3,
        }
    }
}

/// Every size the networks need, fully resolved.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetConfig {
    pub spatial: Spatial,
    pub input_size: i64,
    /// Sides of one network input along each spatial axis (z, y, x for volumes): `input_size`
    /// repeated, or a volume's training patch. Files written before patches lack it.
    #[serde(default)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_before_patches_reads_with_no_sides() {
        let json = r#"{"spatial":"Two","input_size":64,"in_channels":3,"classes":2,"c_width":8,
            "c_max_width":32,"downsample":8,"code_channels":3,"g_width":8,"g_max_width":32,
            "g_out":1,"s_width":8,"s_depth":3,"s_res_blocks":1,"d_width":8,"d_depth":3}"#;
        let c: NetConfig = serde_json::from_str(json).unwrap();
        assert!(c.sides.is_empty());
        assert_eq!((c.spatial, c.out_channels()), (Spatial::Two, 1));
        let back: NetConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn code_size_follows_sides_and_factor() {
        let mut c: NetConfig = serde_json::from_str(
            r#"{"spatial":"Three","input_size":32,"sides":[16,32,32],"in_channels":1,"classes":4,
            "c_width":8,"c_max_width":32,"downsample":4,"code_channels":3,"g_width":8,
            "g_max_width":32,"g_out":1,"s_width":8,"s_depth":3,"s_res_blocks":1,"d_width":8,"d_depth":3}"#,
        )
        .unwrap();
        assert_eq!(c.code_sides(), vec![4, 8, 8]);
        assert_eq!(c.code_bits(), 3 * 4 * 8 * 8);
        assert_eq!(c.pixels(), 16 * 32 * 32);
        assert_eq!(c.out_channels(), 4);
        c.classes = 2;
        assert_eq!(c.out_channels(), 1);
    }
}
