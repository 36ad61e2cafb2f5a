//! Breaker, retry and rate limit around a tonic client, against a small
//! in-repo tonic gRPC server (`echo.Echo/Say`, messages as raw bytes: no
//! protobuf code generation needed). `GrpcClassifier` reads `grpc-status`.
//!
//! The retry layer replays a request by cloning its body; tonic's request
//! bodies are streams, so a unary call is buffered first (`buffered` below).
//!
//! `cargo run --example tonic_client` (offline: everything on loopback).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use llm_tower::circuit::{CircuitBreakerLayer, CircuitConfig, CircuitState};
use llm_tower::core::GrpcClassifier;
use llm_tower::ratelimit::{Limits, RateLimitLayer};
use llm_tower::retry::{Backoff, RetryLayer, RetryPolicy};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder, ServiceExt};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Messages are the bytes themselves.
#[derive(Clone, Copy, Debug, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// How the server misbehaves: the next `unavailable` calls fail with
/// UNAVAILABLE; while `broken` is set, every call fails with INTERNAL.
#[derive(Default)]
struct Faults {
    unavailable: AtomicU32,
    broken: AtomicU32,
    calls: AtomicU32,
}

#[derive(Clone)]
struct Echo(Arc<Faults>);

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "echo.Echo";
}

impl tonic::server::UnaryService<Bytes> for Echo {
    type Response = Bytes;
    type Future = BoxFuture<Result<tonic::Response<Bytes>, Status>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let f = self.0.clone();
        Box::pin(async move {
            f.calls.fetch_add(1, Ordering::Relaxed);
            if f.broken.load(Ordering::Relaxed) > 0 {
                return Err(Status::internal("broken"));
            }
            if f.unavailable.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
            {
                return Err(Status::unavailable("busy"));
            }
            Ok(tonic::Response::new(req.into_inner()))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let svc = self.clone();
        Box::pin(async move {
            if req.uri().path() != "/echo.Echo/Say" {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            Ok(tonic::server::Grpc::new(Raw).unary(svc, req).await)
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), tower::BoxError> {
    let faults = Arc::new(Faults::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(Echo(faults.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    // Our layers speak http::Request<B: Clone>: buffer the unary body, then
    // hand it back to tonic's channel as its own body type.
    let to_channel = tower::service_fn(move |req: http::Request<Full<Bytes>>| {
        let channel = channel.clone();
        // A channel is a buffer: it must be polled ready before each call.
        async move { channel.oneshot(req.map(tonic::body::Body::new)).await }
    });
    let retry = RetryLayer::new(
        RetryPolicy::default().max_attempts(3).backoff(Backoff::Fixed(Duration::from_millis(10))),
    )
    .with_classifier(GrpcClassifier);
    let breaker = CircuitBreakerLayer::new(CircuitConfig::default().consecutive_failures(Some(3)))
        .with_classifier(GrpcClassifier);
    let limiter = RateLimitLayer::new(Limits::default().requests_per_minute(6_000));
    let stack =
        ServiceBuilder::new().layer(retry.clone()).layer(breaker.clone()).layer(limiter).service(to_channel);
    let buffered = tower::service_fn(move |req: http::Request<tonic::body::Body>| {
        let stack = stack.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let res = stack.oneshot(http::Request::from_parts(parts, Full::new(bytes))).await?;
            Ok::<_, tower::BoxError>(res.map(|b| b.map_err(tower::BoxError::from).boxed_unsync()))
        }
    });
    let mut client = tonic::client::Grpc::new(buffered);
    let say = PathAndQuery::from_static("/echo.Echo/Say");

    // UNAVAILABLE twice: retried, then echoed.
    faults.unavailable.store(2, Ordering::Relaxed);
    client.ready().await?;
    let echoed = client.unary(tonic::Request::new(Bytes::from_static(b"hello")), say.clone(), Raw).await?;
    println!("echo {:?} after {} retries", echoed.get_ref(), retry.stats().retries);
    assert_eq!(echoed.into_inner(), Bytes::from_static(b"hello"));
    assert_eq!(retry.stats().retries, 2);

    // INTERNAL every time: the breaker opens and then refuses without calling.
    faults.broken.store(1, Ordering::Relaxed);
    for _ in 0..4 {
        client.ready().await?;
        let status =
            client.unary(tonic::Request::new(Bytes::from_static(b"x")), say.clone(), Raw).await.unwrap_err();
        println!("{:?}: {}", status.code(), status.message());
    }
    let before = faults.calls.load(Ordering::Relaxed);
    client.ready().await?;
    let refused = client.unary(tonic::Request::new(Bytes::from_static(b"x")), say, Raw).await.unwrap_err();
    println!("breaker {:?}; last call refused with {:?}", breaker.handle().state("*"), refused.code());
    assert_eq!(breaker.handle().state("*"), CircuitState::Open);
    assert_eq!(faults.calls.load(Ordering::Relaxed), before, "an open breaker spares the server");
    assert_ne!(refused.code(), Code::Ok);
    Ok(())
}
