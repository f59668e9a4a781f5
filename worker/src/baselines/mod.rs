//! Baselines the paper compares against: a standard codec compresses the image, the decoded
//! image is segmented by the D1 segmentor (trained on uncompressed images), and the true file
//! size gives the rate. JPEG and JPEG-2000 are here; H.264 intra and Auto/Seg are not yet.

pub mod jpeg;
pub mod jpeg2000;
pub mod rate_accuracy;
