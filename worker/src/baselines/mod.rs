//! Baselines the paper compares against: a standard codec compresses the image, the decoded
//! image is segmented by the D1 segmentor (trained on uncompressed images), and the true file
//! size gives the rate. JPEG, JPEG-2000 and H.264 intra; and Auto/Seg, an autoencoder with
//! C's code trained for pixel MSE whose reconstructions the D1 segmentor segments.

pub mod autoseg;
pub mod h264;
pub mod jpeg;
pub mod jpeg2000;
pub mod rate_accuracy;
pub mod rate_point;
pub mod volume_rate;

/// Test images and error measures shared by the codec tests.
#[cfg(test)]
pub(crate) mod test_images {
    /// A `side` x `side` RGB image of diagonal ramps, different per channel.
    pub fn ramps(side: u32, dx: u32, dy: u32, per_channel: u32) -> Vec<u8> {
        (0..side * side * 3)
            .map(|i| {
                let p = i / 3;
                let (x, y) = (p % side, p / side);
                ((x * dx + y * dy + (i % 3) * per_channel) % 256) as u8
            })
            .collect()
    }

    /// Mean absolute difference of two equally long pixel buffers.
    pub fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    }
}
