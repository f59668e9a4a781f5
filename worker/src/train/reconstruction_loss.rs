//! What C and g are asked to rebuild, in the code pre-training (`hyper.codePretrainSteps`) and
//! beside the segmentation loss (`hyper.reconstructionWeight`): the image through the binary
//! code, so that g hands s an image-like map, what a D1's segmentor copied by
//! `hyper.warmStart` was trained to read.

use tch::{Kind, Reduction, Tensor};

/// What g is asked to rebuild: the image itself when g has as many output channels as the
/// image, else the mean over its channels (the small and paper presets give g one channel, so
/// an RGB image becomes its grey level).
fn reconstruction_target(images: &Tensor, g_out: i64) -> Tensor {
    if images.size()[1] == g_out {
        images.shallow_clone()
    } else {
        images.mean_dim(1, true, Kind::Float)
    }
}

/// Pixel MSE between g's map (in fp32) and its target for these images.
pub fn reconstruction_loss(g_map: &Tensor, images: &Tensor, g_out: i64) -> Tensor {
    g_map
        .to_kind(Kind::Float)
        .mse_loss(&reconstruction_target(images, g_out), Reduction::Mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// A grey image is its own target; an RGB image's is its grey level, for g's one channel.
    #[test]
    fn g_rebuilds_the_image_or_its_grey_level() {
        let grey = Tensor::rand([2, 1, 4, 4], (Kind::Float, Device::Cpu));
        assert!(reconstruction_target(&grey, 1).equal(&grey));
        let rgb = Tensor::cat(&[grey.shallow_clone(), &grey * 2.0, &grey * 3.0], 1);
        let target = reconstruction_target(&rgb, 1);
        assert_eq!(target.size(), [2, 1, 4, 4]);
        assert!(target.allclose(&(&grey * 2.0), 1e-6, 1e-6, false));
        assert!(reconstruction_target(&rgb, 3).equal(&rgb));
        // The loss is the mean squared difference from that target.
        let loss = reconstruction_loss(&(&target + 0.5), &rgb, 1).double_value(&[]);
        assert!((loss - 0.25).abs() < 1e-6, "{loss}");
    }
}
