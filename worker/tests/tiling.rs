//! Large volumes run through C and g tile by tile: the code and the features equal one whole
//! pass (the worker's libtorch networks and the edge's C alike), and a scan above the tiling
//! limit codes into the same stream as in one piece.

mod common;

use orchestra_api::{ModelSpec, Preset, Variant};
use orchestra_edge::compressor::{binarize, Planes};
use orchestra_edge::tiling::Tiling;
use orchestra_edge::EdgeModel;
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::eval::tiled_volume::{encode_volume, reconstruct_volume};
use orchestra_worker::nets::Model;
use tch::{nn::ModuleT, Device, Kind, Tensor};

/// Tiles of 2 cells (16 voxels at f 8) for any volume.
const SMALL_TILES: Tiling = Tiling {
    whole_max_voxels: 0,
    tile_side: 16,
};

fn model() -> Model {
    orchestra_worker::nets::rng::reseed(11);
    let spec = ModelSpec {
        downsample: Some(8),
        ..ModelSpec::new(Preset::Small, 32, 3)
    };
    let model = Model::new(
        orchestra_worker::nets::config::resolve(&spec, 1, 3),
        Variant::D4,
        Device::Cpu,
    );
    // Running statistics away from (0, 1), so that BatchNorm is not the identity.
    tch::no_grad(|| {
        for (name, mut t) in model.vs.variables() {
            if name.ends_with("running_mean") {
                let _ = t.fill_(0.05);
            } else if name.ends_with("running_var") {
                let _ = t.fill_(0.7);
            }
        }
    });
    model
}

/// A scan of 5 x 7 x 9 cells at f 8, with structure at every scale.
fn scan() -> (Vec<f32>, [usize; 3]) {
    let sides = [40, 56, 72];
    let voxels = (0..sides.iter().product::<usize>())
        .map(|i| {
            let (z, y, x) = (i / (56 * 72), i / 72 % 56, i % 72);
            let smooth =
                ((z as f32 / 7.0).sin() + (y as f32 / 9.0).cos() * (x as f32 / 11.0).sin()) / 4.0 + 0.5;
            smooth + ((i * 7919) % 97) as f32 / 970.0
        })
        .collect();
    (voxels, sides)
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn tiled_c_and_g_equal_the_whole_pass() {
    let model = model();
    let (voxels, sides) = scan();
    let x = Tensor::from_slice(&voxels).view([1, 1, 40, 56, 72]);
    let (whole_a, whole_bits) = tch::no_grad(|| model.encode(&x, false)).unwrap();
    let (tiled_a, tiled_bits) = encode_volume(&model, &x, SMALL_TILES).unwrap();
    assert_eq!(tiled_a.size(), vec![1, 3, 5, 7, 9]);
    let d = max_difference(&floats(&whole_a), &floats(&tiled_a));
    eprintln!("C: largest difference between tiled and whole activations {d:e}");
    assert!(d <= 1e-6, "C's tiles differ from the whole pass by {d}");
    assert_eq!(floats(&whole_bits), floats(&tiled_bits), "the same code");

    let g = model.reconstructor.as_ref().unwrap();
    let whole_f = tch::no_grad(|| g.forward_t(&whole_bits, false));
    let tiled_f = reconstruct_volume(&model, &whole_bits, SMALL_TILES);
    assert_eq!(tiled_f.size(), vec![1, 1, 40, 56, 72]);
    let d = max_difference(&floats(&whole_f), &floats(&tiled_f));
    eprintln!("g: largest difference between tiled and whole features {d:e}");
    assert!(d <= 1e-5, "g's tiles differ from the whole pass by {d}");

    // Under the limit the scan runs in one piece.
    let none = Tiling {
        whole_max_voxels: usize::MAX,
        ..SMALL_TILES
    };
    let (same, _) = encode_volume(&model, &x, none).unwrap();
    assert_eq!(floats(&same), floats(&whole_a), "under the limit: one whole pass");

    // The edge's C in tiles against its own whole pass and against libtorch's.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume.safetensors");
    CompressionModel::save(&model, &path).unwrap();
    let edge = EdgeModel::load(&path).unwrap();
    let planes = Planes {
        channels: 1,
        sides,
        data: voxels,
    };
    let whole_edge = edge.activations(&planes).unwrap();
    let (shape, tiled_edge_bits) = edge.code_tiled(&planes, [2, 2, 2]).unwrap();
    assert_eq!(shape.sides, vec![5, 7, 9]);
    assert_eq!(
        binarize(&whole_edge),
        tiled_edge_bits,
        "the edge's tiles give its whole code"
    );
    let torch_bits: Vec<i8> = floats(&whole_bits).iter().map(|&b| b as i8).collect();
    let torch_a = floats(&whole_a);
    for (i, (t, e)) in torch_bits.iter().zip(&tiled_edge_bits).enumerate() {
        assert!(t == e || torch_a[i].abs() < 1e-4, "bit {i}: {t} vs {e}");
    }
}

/// The shared MM-WHS CT (512 x 512 x 274, when `../shared/data` is there) end to end at its
/// full resolution: read, windowed from its labelled foreground, coded by the edge in tiles
/// (the scan is above the whole-pass limit), the stream bounded and decoded, segmented in the
/// cloud by g in tiles and s's sliding window, and written back on the scan's own voxels. The
/// weights are untrained (this checks the plumbing at CT scale; learning is checked on
/// synthetic volumes and ACDC), and the model reduces the scan 2 x 4 x 4 so that the test
/// stays within its budget on two cores.
#[test]
fn a_full_ct_scan_codes_in_tiles_and_comes_back_as_a_label_volume() {
    use orchestra_edge::intensity::{foreground_window, Intensity};
    use orchestra_edge::nifti_write::write_labels;
    use orchestra_edge::preparation::{Normalisation, VolumePreprocessing};
    use orchestra_edge::volume::{read_labels, read_volume, LabelVolume, DEFAULT_MAX_VOXELS};

    let Some(data) = common::shared_data() else {
        return;
    };
    let folder = data.join("mmwhs_ct");
    let scan = read_volume(&folder.join("ct_train_1010_image.nii.gz"), DEFAULT_MAX_VOXELS).unwrap();
    let truth = read_labels(&folder.join("ct_train_1010_label.nii.gz"), DEFAULT_MAX_VOXELS).unwrap();
    let source = scan.geometry.sides;
    assert_eq!(source[1..], [512, 512], "a full in-plane CT");
    let Intensity::Ct { low, high } = foreground_window(&[(&scan.voxels, &truth.labels)], 0.5, 99.5).unwrap()
    else {
        panic!("a labelled CT gives a window");
    };
    assert!(low < high);
    let prep = VolumePreprocessing {
        intensity: Normalisation::Ct { low, high },
        factor: [2, 4, 4],
        spacing: None,
    };
    orchestra_worker::nets::rng::reseed(5);
    let spec = ModelSpec {
        downsample: Some(8),
        patch: Some(vec![32, 64, 64]),
        ..ModelSpec::new(Preset::Small, 64, 3)
    };
    let model = Model::new(
        orchestra_worker::nets::config::resolve(&spec, 1, 8),
        Variant::D4,
        Device::Cpu,
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ct.safetensors");
    CompressionModel::save_with(&model, Some(&prep), &path).unwrap();

    // The edge: reduced to 137 x 128 x 128 and padded to 144 x 128 x 128, above a 1 M-voxel
    // limit, so C runs in 64-voxel tiles.
    let edge = EdgeModel::load(&path).unwrap();
    let tiles = Tiling {
        whole_max_voxels: 1 << 20,
        tile_side: 64,
    };
    let sent = edge.encode_volume_with(scan.clone(), tiles).unwrap();
    let whole = edge.encode_volume_with(scan.clone(), Tiling::default()).unwrap();
    assert_eq!(sent.bytes, whole.bytes, "tiles or not, the same stream");
    assert_eq!(sent.voxels, source.iter().product::<usize>());
    eprintln!(
        "CT {source:?}: {} bytes, {:.6} bpp",
        sent.bytes.len(),
        8.0 * sent.bytes.len() as f64 / sent.voxels as f64
    );

    // The cloud: the geometry checked, the code decoded, g (in tiles above its limit) and s.
    let cloud = CompressionModel::load(&path, Device::Cpu).unwrap();
    let (geometry, code) =
        orchestra_codec::volume_stream::unwrap(&sent.bytes, DEFAULT_MAX_VOXELS as u64).unwrap();
    assert_eq!(geometry.sides.map(|s| s as usize), source);
    let (shape, bits) = cloud.codec.decode(code).unwrap();
    assert_eq!(shape.sides, vec![18, 16, 16]);
    let labels = cloud.segment_volume(&geometry, &shape, &bits).unwrap();
    assert_eq!(labels.len(), source.iter().product::<usize>());
    assert!(labels.iter().all(|&l| l < 8));
    let out = dir.path().join("ct-labels.nii.gz");
    write_labels(
        &out,
        &LabelVolume {
            geometry: scan.geometry.clone(),
            labels: labels.clone(),
        },
    )
    .unwrap();
    let back = read_labels(&out, DEFAULT_MAX_VOXELS).unwrap();
    assert_eq!(back.geometry.sides, source);
    assert!(back.labels == labels, "the label volume reads back");

    // A stream that claims more voxels than the cloud allows is refused before any allocation.
    assert!(orchestra_codec::volume_stream::unwrap(&sent.bytes, (sent.voxels - 1) as u64).is_err());
}
