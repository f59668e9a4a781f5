//! Network sizes: the `small` and `paper` presets, resolved against the trial's model spec and
//! the dataset's channels and classes. The sizes' type is the model file's schema, owned by the
//! codec crate (`orchestra_codec::net_config`), which the edge reads too.

use orchestra_api::{ModelSpec, Preset};
pub use orchestra_codec::net_config::NetConfig;

use super::layers::Spatial;

/// The sizes of a trial's networks: its model spec's preset with the spec's overrides, for the
/// dataset's channels and classes.
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
    if let Some(w) = model.decoder_width {
        c.g_width = w as i64;
        c.g_max_width = 4 * w as i64;
    }
    if let Some(w) = model.encoder_width {
        c.c_width = w as i64;
        c.c_max_width = 4 * w as i64;
    }
    if let Some(d) = model.depth {
        c.s_depth = d as i64;
        c.d_depth = d as i64;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `model.decoderWidth` sets g's width at full resolution and its cap four times that, and
    /// leaves s, D and C at the preset's widths (a wider g still warm-starts s from a D1).
    #[test]
    fn decoder_width_widens_g_only() {
        let preset = ModelSpec::new(Preset::Small, 64, 3);
        let wide = ModelSpec {
            decoder_width: Some(16),
            ..preset.clone()
        };
        let (a, b) = (resolve(&preset, 1, 4), resolve(&wide, 1, 4));
        assert_eq!((a.g_width, a.g_max_width), (8, 32));
        assert_eq!((b.g_width, b.g_max_width), (16, 64));
        let g_only = NetConfig {
            g_width: a.g_width,
            g_max_width: a.g_max_width,
            ..b.clone()
        };
        assert_eq!(g_only, a);
    }

    /// `model.encoderWidth` sets C's width at full resolution and its cap four times that,
    /// and leaves the code's size, g, s and D at the preset's.
    #[test]
    fn encoder_width_widens_c_only() {
        let preset = ModelSpec::new(Preset::Paper, 128, 2);
        let wide = ModelSpec {
            encoder_width: Some(16),
            ..preset.clone()
        };
        let (a, b) = (resolve(&preset, 3, 2), resolve(&wide, 3, 2));
        assert_eq!((a.c_width, a.c_max_width), (32, 224));
        assert_eq!((b.c_width, b.c_max_width), (16, 64));
        let c_only = NetConfig {
            c_width: a.c_width,
            c_max_width: a.c_max_width,
            ..b.clone()
        };
        assert_eq!(c_only, a);
        assert_eq!(b.code_bits(), a.code_bits());
    }
}
