//! The paper's Table 2, where the time goes between a scan on the edge and its label map in the
//! cloud: for images (`images`: per image, averaged after warm-up) and for one whole scan
//! (`volumes`: each stage timed once over the scan).

pub mod images;
pub mod markdown;
pub mod pytorch_cloud;
pub mod side_by_side;
pub mod volumes;
