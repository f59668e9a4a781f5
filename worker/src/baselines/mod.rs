//! Baselines the paper compares against: a standard codec compresses the image, the decoded
//! image is segmented by the D1 segmentor (trained on uncompressed images), and the true file
//! size gives the rate. JPEG, JPEG-2000 and H.264 intra; and Auto/Seg, an autoencoder with
//! C's code trained for pixel MSE whose reconstructions the D1 segmentor segments.

pub mod autoseg;
pub mod h264;
pub mod jpeg;
pub mod jpeg2000;
pub mod rate_accuracy;
