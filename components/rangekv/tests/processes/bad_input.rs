//! Malformed and oversized requests over gRPC: clear errors, and the cluster keeps serving.

use crate::support::*;

#[test]
fn bad_input_over_grpc_gets_clear_errors_and_the_cluster_keeps_serving() {
    use proto::kvrpcpb::{Context, RawGetRequest, RawPutRequest};
    use proto::tikvpb::tikv_client::TikvClient;

    let t = TestCluster::start(3);
    let c = t.client();
    let pd = t.pd();
    let leader = t.leader_index(b"");
    let addr = format!("http://{}", t.cluster.stores[leader].addr);
    t.rt.block_on(async {
        let info = pd.get_region(b"").await.unwrap();
        let ctx = Context {
            region_id: info.region.id,
            region_epoch: info.region.region_epoch,
            peer: info.leader,
            ..Default::default()
        };
        let mut kv = TikvClient::connect(addr).await.unwrap();
        // Oversized key.
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                key: vec![b'k'; 100_000].into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("key is"), "{resp:?}");
        // Oversized value (over the 6 MiB limit, under the gRPC message limit).
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                key: b"big".to_vec().into(),
                value: vec![0u8; 7 * 1024 * 1024].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("value is"), "{:?}", resp.error);
        // Empty key.
        let resp = kv
            .raw_put(RawPutRequest {
                context: Some(ctx.clone()),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("empty"), "{resp:?}");
        // Unknown region.
        let mut bad = ctx.clone();
        bad.region_id = 987_654;
        let resp = kv
            .raw_get(RawGetRequest {
                context: Some(bad),
                key: b"k".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.region_error.unwrap().region_not_found.is_some());
        // Malformed: no region id at all.
        let resp = kv
            .raw_get(RawGetRequest {
                context: Some(Context::default()),
                key: b"k".to_vec().into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(resp.error.contains("region"), "{resp:?}");
        // Bytes that are not a protobuf message: a gRPC error status, not a crash.
        let channel = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            t.cluster.stores[leader].addr
        ))
        .unwrap()
        .connect()
        .await
        .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tikvpb.Tikv/RawGet");
        let status = grpc
            .unary(
                tonic::Request::new(vec![0xff, 0xff, 0xff, 0x07, 0x01]),
                path,
                RawBytesCodec,
            )
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
        // The cluster still serves.
        c.put(b"still".to_vec(), b"ok".to_vec()).await.unwrap();
        assert_eq!(
            c.get(b"still".to_vec()).await.unwrap().map(|v| v.to_vec()),
            Some(b"ok".to_vec())
        );
    });
}

/// A codec that sends raw bytes, to put malformed messages on the wire.
struct RawBytesCodec;

impl tonic::codec::Codec for RawBytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytesCodec;
    type Decoder = RawBytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawBytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawBytesCodec
    }
}

impl tonic::codec::Encoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytesCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}
