//! Real bitstreams: contexts agree with the training model, trained codes round-trip exactly
//! through deployable model files, and the decoder survives generated and corpus inputs.

mod common;

use orchestra_api::Variant;
use orchestra_worker::codec::fuzz::fuzz_decoder;
use orchestra_worker::codec::model_code::{code_rows, code_shape};
use orchestra_worker::codec::model_file::CompressionModel;
use orchestra_worker::codec::{context, quantize, CodeShape, Codec, CodecError};
use orchestra_worker::data::{batch, Dataset, Sample};
use orchestra_worker::nets::bit_model::{BitModel, CONTEXTS};
use orchestra_worker::nets::Spatial;
use orchestra_worker::train::Trainer;
use tch::{nn::VarStore, Device, Kind, Tensor};

#[test]
fn rust_contexts_equal_the_tensor_contexts_in_2d_and_3d() {
    orchestra_worker::nets::rng::reseed(4);
    for (spatial, sides) in [(Spatial::Two, vec![5i64, 7]), (Spatial::Three, vec![3, 4, 5])] {
        let vs = VarStore::new(Device::Cpu);
        let q = BitModel::new(vs.root(), 3, spatial);
        let mut dims = vec![2i64, 3];
        dims.extend(&sides);
        let bits = orchestra_worker::nets::rng::uniform(&dims, 0.0, 1.0)
            .ge(0.5)
            .to_kind(Kind::Float)
            * 2.0
            - 1.0;
        let expected: Vec<i64> = Vec::try_from(q.contexts(&bits).reshape([-1])).unwrap();
        let shape = CodeShape {
            channels: 3,
            sides: sides.iter().map(|&s| s as usize).collect(),
        };
        let rows = code_rows(&bits);
        let per_image = shape.bits();
        for (n, row) in rows.iter().enumerate() {
            for i in 0..per_image {
                assert_eq!(
                    context(&shape, row, i) as i64,
                    expected[n * per_image + i],
                    "{spatial:?} image {n} bit {i}"
                );
            }
        }
    }
}

fn trained(variant: Variant, steps: usize) -> Trainer {
    let mut spec = common::tiny_spec(variant, "memory://codec", "codec");
    spec.hyper.lambda_rate = 0.5;
    spec.steps = steps as u64;
    let data = Dataset::open(&spec.dataset, spec.model.input_size).unwrap();
    let mut t = Trainer::new(spec, data).unwrap();
    for _ in 0..steps {
        t.train_step().unwrap();
    }
    t
}

#[test]
fn evaluation_measures_real_bitstreams_that_round_trip() {
    let t = trained(Variant::D4, 30);
    let rate = t.evaluate().rate.unwrap();
    assert_eq!(rate.round_trip_failures, 0);
    let (bpp, no_header) = (rate.bpp.unwrap(), rate.bpp_no_header.unwrap());
    let pixels = 64.0 * 64.0;
    assert!(
        (bpp - no_header - 24.0 / pixels).abs() < 1e-9,
        "2 header bytes and the check value per image: {bpp} vs {no_header}"
    );
    // The real payload is close to the ideal code length: within a byte per image on average.
    assert!(
        no_header < rate.bpp_estimate + 8.0 / pixels,
        "payload {no_header} vs estimate {}",
        rate.bpp_estimate
    );
    assert!(
        no_header > rate.bpp_estimate - 8.0 / pixels,
        "payload {no_header} vs estimate {}",
        rate.bpp_estimate
    );
    eprintln!(
        "bpp: estimate {:.5}, payload {no_header:.5}, with header {bpp:.5}",
        rate.bpp_estimate
    );
}

fn val_images(t: &Trainer, n: usize) -> Tensor {
    let data = t.data.images().expect("an image trial");
    let refs: Vec<&Sample> = data.val.iter().take(n).collect();
    batch(&refs, data.channels, data.size, Device::Cpu).0
}

#[test]
fn model_files_compress_on_the_edge_and_segment_in_the_cloud() {
    let t = trained(Variant::D4, 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    CompressionModel::save(&t.model, &path).unwrap();
    let edge = CompressionModel::load(&path, Device::Cpu).unwrap();
    let cloud = CompressionModel::load(&path, Device::Cpu).unwrap();
    assert_eq!(edge.model.variant, Variant::D4);
    let images = val_images(&t, 4);
    let streams = edge.encode(&images).unwrap();
    let expected = tch::no_grad(|| t.model.labels(&t.model.forward(&images, false).probs));
    for (i, s) in streams.iter().enumerate() {
        let labels = cloud.segment(s).unwrap();
        assert!(
            labels.equal(&expected.get(i as i64)),
            "image {i}: cloud labels differ from the trained model's"
        );
    }
    // A stream from another model is refused by name.
    let other = trained(Variant::D2, 3);
    let foreign = CompressionModel::new(other.model).unwrap();
    let stream = foreign.encode(&images.narrow(0, 0, 1)).unwrap().remove(0);
    if foreign.codec.tag != cloud.codec.tag {
        assert!(matches!(
            cloud.segment(&stream),
            Err(CodecError::WrongModel { .. })
        ));
    }
    assert!(
        CompressionModel::save(&trained(Variant::D1, 1).model, &path).is_err(),
        "D1 has nothing to compress"
    );
}

fn test_codec() -> Codec {
    let p: Vec<f64> = (0..3 * CONTEXTS as usize)
        .map(|i| match (i % CONTEXTS as usize) % 3 {
            0 => 0.1,
            2 => 0.9,
            _ => 0.5,
        })
        .collect();
    Codec::new(
        quantize(&p),
        0x5a,
        CodeShape {
            channels: 3,
            sides: vec![8, 8],
        },
    )
    .unwrap()
}

fn valid_streams(c: &Codec) -> Vec<Vec<u8>> {
    orchestra_worker::nets::rng::reseed(9);
    (0..16)
        .map(|_| {
            let bits = orchestra_worker::nets::rng::uniform(&[1, 3, 8, 8], 0.0, 1.0)
                .ge(0.3)
                .to_kind(Kind::Float)
                * 2.0
                - 1.0;
            c.encode(&code_shape(&bits), &code_rows(&bits)[0]).unwrap()
        })
        .collect()
}

#[test]
fn the_decoder_never_panics_on_generated_inputs() {
    let c = test_codec();
    let report = fuzz_decoder(&c, &valid_streams(&c), 20_000, 1);
    eprintln!("fuzz: {report:?}");
    assert_eq!(
        report.panics, 0,
        "first panicking input: {:02x?}",
        report.first_panic
    );
    assert!(report.rejected > 0 && report.mutated > 3000, "{report:?}");
    // A damaged stream that decodes is a wrong answer: the check value lets one through with
    // probability 1/256 at most (and single flipped bits or bytes never).
    assert!(
        report.accepted_damaged * 128 <= report.mutated,
        "{} of {} damaged streams accepted; first: {:02x?}",
        report.accepted_damaged,
        report.mutated,
        report.first_accepted_damaged
    );
}

fn outcome(r: &Result<(CodeShape, Vec<i8>), CodecError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap()
            .to_string(),
    }
}

/// Inputs that once mattered, with the outcome each must keep: `hex outcome` per line.
#[test]
fn the_decoder_regression_corpus_keeps_its_outcomes() {
    let c = test_codec();
    let path = common::manifest_dir().join("tests/corpus/decoder.txt");
    if std::env::var_os("ORCHESTRA_WRITE_CORPUS").is_some() {
        let mut lines = vec![
            "# decoder regression corpus: hex input, expected outcome (3x8x8 code, tag 0x5a)".to_string(),
        ];
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x20],
            vec![0x10, 0x5a, 0x00],
            vec![0x30, 0x5a],
            vec![0x22, 0x5a],
            vec![0x20, 0x00],
            vec![0x20, 0x5a],
            vec![0x21, 0x5a, 0x80],
            vec![0x21, 0x5a, 0x00, 0x01],
            // 4096 x 4096 announced by 7 bytes.
            vec![0x21, 0x5a, 0x80, 0x20, 0x80, 0x20, 0x00],
        ];
        for s in valid_streams(&c).into_iter().take(4) {
            inputs.push(s.clone());
            inputs.push(s[..s.len() - 1].to_vec());
            let mut x = s.clone();
            x.push(0);
            inputs.push(x);
            let mut f = s.clone();
            let last = f.len() - 1;
            f[last] ^= 0x40;
            inputs.push(f);
        }
        for i in inputs {
            let hex: String = i.iter().map(|b| format!("{b:02x}")).collect();
            lines.push(format!(
                "{} {}",
                if hex.is_empty() { "-".into() } else { hex },
                outcome(&c.decode(&i))
            ));
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (hex, expected) = line.split_once(' ').unwrap();
        let bytes: Vec<u8> = if hex == "-" {
            vec![]
        } else {
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect()
        };
        assert_eq!(outcome(&c.decode(&bytes)), expected, "input {hex}");
        checked += 1;
    }
    assert!(checked >= 20, "corpus has {checked} entries");
}
