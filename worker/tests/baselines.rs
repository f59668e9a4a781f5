//! Baseline codecs and the rate-accuracy comparison.

mod common;

use orchestra_api::Variant;
use orchestra_worker::baselines::rate_accuracy::CodecSetting;
use orchestra_worker::baselines::{jpeg, rate_accuracy};
use orchestra_worker::data::Dataset;
use orchestra_worker::train::Trainer;

#[test]
fn jpeg_rate_grows_with_quality_and_decodes_close_to_the_original() {
    let sample =
        orchestra_worker::data::synthetic::generate(orchestra_worker::data::SyntheticKind::Lesion, 64, 2, 0);
    let sizes: Vec<usize> = [5u8, 50, 95]
        .iter()
        .map(|&q| jpeg::encode(&sample.image, 64, 3, q).unwrap().len())
        .collect();
    assert!(sizes[0] < sizes[1] && sizes[1] < sizes[2], "{sizes:?}");
    let back = jpeg::decode(&jpeg::encode(&sample.image, 64, 3, 95).unwrap(), 3).unwrap();
    assert_eq!(back.len(), sample.image.len());
    let mad: f64 = back
        .iter()
        .zip(&sample.image)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / back.len() as f64;
    assert!(mad < 6.0, "mean absolute error {mad}");
    assert!(jpeg::decode(b"not a jpeg", 3).is_err());
}

#[test]
fn rate_accuracy_compares_jpeg_with_a_learned_model() {
    let train = |variant| {
        let spec = common::tiny_spec(variant, "memory://ra", "ra");
        let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
        let mut t = Trainer::new(spec, data).unwrap();
        for _ in 0..8 {
            t.train_step().unwrap();
        }
        t
    };
    let d1 = train(Variant::D1);
    let d4 = train(Variant::D4);
    let val = &d1.data.images().unwrap().val;
    let curve = rate_accuracy::jpeg_curve(&d1.model, val, 3, 64, &[5, 50, 95]).unwrap();
    assert_eq!(curve.len(), 3);
    assert!(curve.windows(2).all(|w| w[0].bpp < w[1].bpp), "{curve:?}");
    assert!(curve
        .iter()
        .all(|p| (0.0..=1.0).contains(&p.dice) && p.images == val.len()));
    let learned = rate_accuracy::learned_point("d4", &d4.model, val, 3, 64).unwrap();
    assert!(
        learned.bpp < curve[0].bpp,
        "the learned code is far below JPEG's lowest rate"
    );
    assert!(
        rate_accuracy::learned_point("d1", &d1.model, val, 3, 64).is_err(),
        "D1 has no bitstream"
    );

    let j2k = rate_accuracy::codec_curve(
        &d1.model,
        val,
        3,
        64,
        &[CodecSetting::Jpeg2000(0.3), CodecSetting::Jpeg2000(1.5)],
    )
    .unwrap();
    assert_eq!(j2k[0].method, "JPEG-2000");
    assert!(j2k[0].bpp < j2k[1].bpp, "{j2k:?}");
    // At 64x64 a J2K codestream's own headers are a visible share: its lowest rate stays
    // well above the learned code's.
    assert!(learned.bpp < j2k[0].bpp, "{j2k:?}");
    let h264 = rate_accuracy::codec_curve(
        &d1.model,
        val,
        3,
        64,
        &[CodecSetting::H264(46), CodecSetting::H264(24)],
    )
    .unwrap();
    assert_eq!(h264[0].method, "H.264 intra");
    assert!(h264[0].bpp < h264[1].bpp, "{h264:?}");
    assert!(learned.bpp < h264[0].bpp, "{h264:?}");
    let mut all = curve.clone();
    all.extend(j2k);
    all.extend(h264);
    let report = rate_accuracy::report("test", &[(learned.clone(), Variant::D4)], &all);
    assert_eq!(report.baselines.len(), 3);
    assert_eq!(report.baselines[0].points.len(), 3);
    let dir = tempfile::tempdir().unwrap();
    let (svg, png) = orchestra_report::figure::write_figure(&report, &dir.path().join("ra")).unwrap();
    assert!(std::fs::metadata(svg).unwrap().len() > 1000 && std::fs::metadata(png).unwrap().len() > 1000);
    let table = rate_accuracy::table(&[curve[0].clone(), learned]);
    assert!(
        table.contains("| JPEG | quality 5 |") && table.contains("| d4 (D4) |"),
        "{table}"
    );
}

#[test]
fn auto_seg_learns_to_reconstruct_through_cs_code() {
    use orchestra_worker::baselines::autoseg::{autoseg_point, AutoEncoder};
    let spec = common::tiny_spec(Variant::D1, "memory://autoseg", "autoseg");
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    let mut d1 = Trainer::new(spec.clone(), data).unwrap();
    for _ in 0..4 {
        d1.train_step().unwrap();
    }
    let config = orchestra_worker::nets::config::resolve(&spec.model, 3, 2);
    let ae = AutoEncoder::new(&config, tch::Device::Cpu, 3);
    let (first, last) = ae.train(&d1.data.images().unwrap().train, 60, 8, 2e-3, 3);
    assert!(last < 0.7 * first, "pixel MSE {first} -> {last}");
    let point = autoseg_point(&d1.model, &ae, &d1.data.images().unwrap().val);
    assert_eq!(point.method, "Auto/Seg");
    // The same code as C (4 x 8 x 8 bits at 64 px) plus the 2-byte header and the check value.
    assert_eq!(point.bpp, (256.0 + 24.0) / (64.0 * 64.0));
    assert!((0.0..=1.0).contains(&point.dice) && point.images == d1.data.images().unwrap().val.len());
    let rec = ae.reconstructions(&d1.data.images().unwrap().val[..2]);
    assert_eq!(rec[0].image.len(), 64 * 64 * 3);
}
