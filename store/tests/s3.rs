//! The store against a real S3-compatible server (moto, installed by `make setup`) started on
//! loopback by the test itself.

use orchestra_store::moto::{create_bucket, point_at, start_moto, SERIAL};
use orchestra_store::Store;

#[test]
fn objects_round_trip_through_s3_under_a_prefix() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    create_bucket(moto.port, "runs");
    point_at(moto.port);
    let store = Store::open("s3://runs/team/exp1").unwrap();
    assert_eq!(store.get("a/b.json").unwrap(), None);
    store.put("a/b.json", b"{\"x\": 1}".to_vec()).unwrap();
    store.put("a/c/d.bin", vec![7u8; 100_000]).unwrap();
    store.put("z.txt", b"z".to_vec()).unwrap();
    assert_eq!(store.get("a/b.json").unwrap().unwrap().as_ref(), b"{\"x\": 1}");
    assert_eq!(store.get("a/c/d.bin").unwrap().unwrap().len(), 100_000);
    assert_eq!(
        store.list("a").unwrap(),
        ["a/b.json", "a/c/d.bin"],
        "keys are relative to the prefix"
    );
    store.delete_prefix("a").unwrap();
    assert_eq!(store.list("").unwrap(), ["z.txt"]);
    // Another prefix in the same bucket sees none of it.
    assert!(Store::open("s3://runs/team/exp2")
        .unwrap()
        .list("")
        .unwrap()
        .is_empty());
}

#[test]
fn a_missing_bucket_or_a_stopped_server_is_reported_not_hidden() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let moto = start_moto();
    point_at(moto.port);
    let store = Store::open("s3://no-such-bucket/x").unwrap();
    let err = store.put("k", b"v".to_vec()).unwrap_err().to_string();
    assert!(
        err.contains("s3://no-such-bucket/x") && err.contains("put k"),
        "{err}"
    );
    drop(moto);
    let err = store.get("k").unwrap_err().to_string();
    assert!(err.contains("get k"), "{err}");
}
