//! Bad input of every kind gets a clear error and changes nothing.

mod common;

use common::*;
use gridmesh_proto::client::RetryPolicy;
use gridmesh_proto::v1::{
    FeederInfo, GetFeederRequest, GetMeterStatusRequest, GetReadingsRequest, MeterInfo,
    PhaseValues, ReadingBatch, RegisterFeederRequest, RegisterMeterRequest, RejectReason,
    Resolution, TransformerInfo,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_readings_are_rejected_one_by_one_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]);
    node.start().expect("node starts");
    let client = connect(&node).await.with_retry(RetryPolicy::none());
    client
        .registry()
        .import_topology(topology(1, 2))
        .await
        .expect("import");
    let m = meter_id(0);

    let good = reading(&m, 0);
    let cases = vec![
        (
            reading(&"x".repeat(10_000), 0),
            RejectReason::InvalidMeterId,
        ),
        (
            gridmesh_proto::v1::Reading {
                active_power_w: Some(f64::NAN),
                ..reading(&m, 1)
            },
            RejectReason::NotFinite,
        ),
        (
            gridmesh_proto::v1::Reading {
                ts_ms: 915_148_800_000,
                ..reading(&m, 1)
            },
            RejectReason::TimestampTooEarly,
        ),
        (
            gridmesh_proto::v1::Reading {
                ts_ms: 4_102_444_800_000,
                ..reading(&m, 1)
            },
            RejectReason::TimestampInFuture,
        ),
        (reading("NOBODY", 1), RejectReason::UnknownMeter),
        (
            gridmesh_proto::v1::Reading {
                voltage_v: Some(PhaseValues {
                    l1: Some(9000.0),
                    ..Default::default()
                }),
                ..reading(&m, 1)
            },
            RejectReason::OutOfRange,
        ),
        (
            gridmesh_proto::v1::Reading {
                energy_import_register_wh: Some(1.0),
                ..reading(&m, 1)
            },
            RejectReason::RegisterBackwards,
        ),
        (
            gridmesh_proto::v1::Reading {
                interval_energy_import_wh: Some(999.0),
                ..good.clone()
            },
            RejectReason::Conflict,
        ),
        (
            gridmesh_proto::v1::Reading {
                meter_id: m.clone(),
                ts_ms: good.ts_ms + 60_000,
                ..Default::default()
            },
            RejectReason::Empty,
        ),
    ];
    let mut readings = vec![good.clone()];
    readings.extend(cases.iter().map(|(r, _)| r.clone()));
    let (ack, _) = client
        .push_batch(ReadingBatch {
            batch_id: 9,
            readings,
        })
        .await
        .expect("push");
    assert_eq!(ack.accepted, 1, "{ack:?}");
    assert_eq!(ack.rejected.len(), cases.len());
    for (rejection, (_, reason)) in ack.rejected.iter().zip(&cases) {
        assert_eq!(rejection.reason, *reason as i32, "{rejection:?}");
        assert!(!rejection.message.is_empty());
    }

    // Only the one good reading is stored.
    let raw = client
        .query()
        .get_readings(GetReadingsRequest {
            meter_id: m.clone(),
            from_ts_ms: base_ts(),
            to_ts_ms: base_ts() + DAY_MS,
            resolution: Resolution::Raw as i32,
            limit: 0,
            local_only: false,
        })
        .await
        .expect("raw")
        .into_inner();
    assert_eq!(raw.readings, vec![good]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_and_requests_get_clear_statuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = node(dir.path(), &[]).env("GRIDMESH_INGEST__MAX_BATCH_READINGS", "100");
    node.start().expect("node starts");
    let client = connect(&node).await.with_retry(RetryPolicy::none());
    client
        .registry()
        .import_topology(topology(1, 2))
        .await
        .expect("import");

    let code = |r: Result<_, gridmesh_proto::client::ClientError>| match r {
        Err(gridmesh_proto::client::ClientError::Status(s)) => (s.code(), s.message().to_owned()),
        other => panic!("expected a status, got {other:?}"),
    };
    let (c, message) = code(
        client
            .push_batch(ReadingBatch {
                batch_id: 1,
                readings: vec![],
            })
            .await
            .map(|_| ()),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(message.contains("no readings"), "{message}");

    let big = (0..101).map(|k| reading(&meter_id(0), k)).collect();
    let (c, message) = code(
        client
            .push_batch(ReadingBatch {
                batch_id: 2,
                readings: big,
            })
            .await
            .map(|_| ()),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(message.contains("at most 100"), "{message}");

    // Registry: unknown feeder, impossible rating, missing nominal voltage.
    let meter = MeterInfo {
        meter_id: "NEW-1".into(),
        feeder_id: "NOPE".into(),
        nominal_voltage_v: 230.0,
        ..Default::default()
    };
    let status = client
        .registry()
        .register_meter(RegisterMeterRequest { meter: Some(meter) })
        .await
        .expect_err("unknown feeder");
    assert_eq!(status.code(), Code::FailedPrecondition);
    let feeder = FeederInfo {
        feeder_id: "F-9".into(),
        rating_kva: 0.0,
        head_meter_id: String::new(),
        transformers: Vec::new(),
    };
    let status = client
        .registry()
        .register_feeder(RegisterFeederRequest {
            feeder: Some(feeder),
        })
        .await
        .expect_err("rating 0");
    assert_eq!(status.code(), Code::InvalidArgument);
    for (transformers, what) in [
        (vec![("T-1", 100.0), ("T-1", 50.0)], "listed twice"),
        (vec![("T-1", f64::NAN)], "rating_kva"),
        (vec![("T 1", 100.0)], "transformer_id"),
    ] {
        let feeder = FeederInfo {
            feeder_id: "F-9".into(),
            rating_kva: 100.0,
            head_meter_id: String::new(),
            transformers: transformers
                .into_iter()
                .map(|(id, rating_kva)| TransformerInfo {
                    transformer_id: id.into(),
                    rating_kva,
                })
                .collect(),
        };
        let status = client
            .registry()
            .register_feeder(RegisterFeederRequest {
                feeder: Some(feeder),
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}");
        assert!(
            status.message().contains(what),
            "{what}: {}",
            status.message()
        );
    }
    let status = client
        .registry()
        .get_feeder(GetFeederRequest {
            feeder_id: "F-9".into(),
        })
        .await
        .expect_err("nothing was registered");
    assert_eq!(status.code(), Code::NotFound);
    let meter = MeterInfo {
        meter_id: "NEW-2".into(),
        feeder_id: "F-0".into(),
        ..Default::default()
    };
    let status = client
        .registry()
        .register_meter(RegisterMeterRequest { meter: Some(meter) })
        .await
        .expect_err("no voltage");
    assert!(
        status.message().contains("nominal_voltage_v"),
        "{}",
        status.message()
    );

    // Queries: bad ranges, unknown meters, oversized ids.
    let request = GetReadingsRequest {
        meter_id: meter_id(0),
        from_ts_ms: 10,
        to_ts_ms: 5,
        resolution: 1,
        limit: 0,
        local_only: false,
    };
    assert_eq!(
        client
            .query()
            .get_readings(request)
            .await
            .expect_err("range")
            .code(),
        Code::InvalidArgument
    );
    let request = GetMeterStatusRequest {
        meter_id: "UNKNOWN".into(),
    };
    assert_eq!(
        client
            .query()
            .get_meter_status(request)
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    let request = GetMeterStatusRequest {
        meter_id: "x".repeat(10_000),
    };
    assert_eq!(
        client
            .query()
            .get_meter_status(request)
            .await
            .expect_err("long id")
            .code(),
        Code::InvalidArgument
    );

    // A message over the node's size limit is refused before it is decoded.
    let wide = (0..100)
        .map(|k| reading(&"M".repeat(60), k))
        .collect::<Vec<_>>();
    let mut limited = node_with_limit(dir.path());
    limited.start().expect("limited node starts");
    let small = connect(&limited).await.with_retry(RetryPolicy::none());
    let (c, message) = code(
        small
            .push_batch(ReadingBatch {
                batch_id: 4,
                readings: wide,
            })
            .await
            .map(|_| ()),
    );
    assert!(
        matches!(c, Code::OutOfRange | Code::ResourceExhausted),
        "{c:?}: {message}"
    );
    assert!(message.contains("too large"), "{message}");

    // Malformed protobuf on the wire: refused, and the node carries on. Without a token it
    // never gets as far as decoding.
    let garbage = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    let anonymous = push_raw_bytes(&node.grpc_target(), garbage.clone(), None).await;
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let token = client
        .login(
            gridmesh_chaos::TEST_ADMIN,
            gridmesh_chaos::TEST_ADMIN_PASSWORD,
        )
        .await
        .expect("login")
        .access_token;
    let status = push_raw_bytes(&node.grpc_target(), garbage, Some(&token)).await;
    assert_ne!(status.code(), Code::Ok);
    assert!(
        status.message().to_lowercase().contains("decode"),
        "{}",
        status.message()
    );
    let (ack, _) = client
        .push_batch(ReadingBatch {
            batch_id: 3,
            readings: vec![reading(&meter_id(1), 0)],
        })
        .await
        .expect("still serving");
    assert_eq!(ack.accepted, 1);
}

/// A node whose gRPC messages may be at most 8 KiB.
fn node_with_limit(dir: &std::path::Path) -> gridmesh_chaos::NodeProcess {
    let mut limited = gridmesh_chaos::NodeProcess::new(&dir.join("limited"))
        .expect("ports")
        .binary(env!("CARGO_BIN_EXE_gridmesh"))
        .env("GRIDMESH_INGEST__MAX_MESSAGE_BYTES", "8192");
    limited.log_path = dir.join("limited.log");
    limited
}

/// Sends arbitrary bytes as the body of an IngestService/PushBatch call.
async fn push_raw_bytes(target: &str, body: Vec<u8>, token: Option<&str>) -> tonic::Status {
    use bytes_codec::RawCodec;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/gridmesh.v1.IngestService/PushBatch",
    );
    let mut request = tonic::Request::new(body);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii token");
        request.metadata_mut().insert("authorization", value);
    }
    grpc.unary(request, path, RawCodec)
        .await
        .expect_err("garbage must be refused")
}

mod bytes_codec {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    /// Sends and receives message bodies as raw bytes.
    pub(crate) struct RawCodec;

    pub(crate) struct RawEncoder;
    pub(crate) struct RawDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = RawEncoder;
        type Decoder = RawDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> RawDecoder {
            RawDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for RawDecoder {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            let mut out = vec![0; src.remaining()];
            src.copy_to_slice(&mut out);
            Ok(Some(out))
        }
    }
}
