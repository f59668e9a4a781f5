//! Volumes through the paper's 3D networks and the codec: a synthetic cardiac volume (not a
//! cube) compressed by a 3D C into one bitstream whose header carries the volume's code shape,
//! decoded bit-exactly, its rate counted per voxel; damaged streams and headers claiming more
//! than the limits are refused with typed errors.

use orchestra_api::{ModelSpec, Preset, Variant};
use orchestra_codec::{CodecError, Limits};
use orchestra_edge::synthetic_volume::{heart3d, Heart3d};
use orchestra_worker::codec::model_code::{code_rows, code_shape, codec_for};
use orchestra_worker::nets::Model;
use tch::{Device, Kind, Tensor};

#[test]
fn a_whole_volume_codes_into_one_stream_and_back_bit_exactly() {
    let _guard = tch::no_grad_guard();
    tch::manual_seed(3);
    let config = orchestra_worker::nets::config::resolve(&ModelSpec::new(Preset::Small, 32, 3), 1, 3);
    let model = Model::new(config.clone(), Variant::D4, Device::Cpu);
    let codec = codec_for(&model).expect("D4 has a code");

    // 32 slices of 64 x 96: the code's sides differ from the model's default cube.
    let sides = [32usize, 64, 96];
    let (scan, _) = heart3d(&Heart3d::new(sides, 5));
    let x = Tensor::from_slice(&scan.voxels)
        .view([1, 1, 32, 64, 96])
        .to_kind(Kind::Float);
    let bits = model.forward(&x, false).bits.expect("bits");
    let shape = code_shape(&bits);
    let f = config.downsample as usize;
    assert_eq!(shape.sides, vec![32 / f, 64 / f, 96 / f]);
    let row = code_rows(&bits).remove(0);
    let stream = codec.encode(&shape, &row).unwrap();
    let (back_shape, back) = codec.decode(&stream).unwrap();
    assert_eq!((back_shape, back), (shape.clone(), row.clone()), "bit-exact");
    let voxels: usize = sides.iter().product();
    let bpp = 8.0 * stream.len() as f64 / voxels as f64;
    assert!(bpp > 0.0 && bpp < 0.1, "{bpp} bits per voxel");
    // The header carries the code's three sides (2 bytes, then a varint per side, then the
    // check byte): 6 bytes, counted in the rate.
    assert_eq!(codec.header_len(&stream).unwrap(), 2 + 3 + 1);
    let described = codec.describe(&stream, voxels).unwrap();
    assert!(described.contains("(6 header and check value)"), "{described}");

    // Damage anywhere is refused, never decoded into another code.
    for i in 0..stream.len() {
        let mut bad = stream.clone();
        bad[i] ^= 0x10;
        match codec.decode(&bad) {
            Err(_) => {}
            Ok((s, b)) => assert!(
                s == shape && b == row,
                "byte {i}: a damaged stream decoded to another code"
            ),
        }
    }
    // A decoder with tighter limits refuses the volume's header before decoding anything.
    let tight = codec.with_limits(Limits {
        max_side: 4,
        max_positions: 64,
    });
    match tight.decode(&stream) {
        Err(CodecError::OverLimit { sides, .. }) => assert_eq!(sides, shape.sides),
        other => panic!("expected a shape error, got {other:?}"),
    }
}
