//! `IngestService`: unary batches and bidirectional streams.

use std::sync::Arc;

use gridmesh_actors::api::Api;
use gridmesh_actors::ingest::Admission;
use gridmesh_proto::v1::ingest_service_server::IngestService;
use gridmesh_proto::v1::{PushAck, ReadingBatch};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::authn::principal;
use crate::scope;

/// The ingest service.
#[derive(Debug, Clone)]
pub struct IngestApi {
    api: Api,
    max_inflight_per_stream: usize,
}

impl IngestApi {
    /// A service over the node's API.
    pub fn new(api: Api, max_inflight_per_stream: u32) -> Self {
        Self {
            api,
            max_inflight_per_stream: max_inflight_per_stream as usize,
        }
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn push_batch(
        &self,
        request: Request<ReadingBatch>,
    ) -> Result<Response<PushAck>, Status> {
        let me = principal(&request)?;
        let batch = request.into_inner();
        scope::batch(self.api.ctx(), &me, &batch).await?;
        tracing::debug!(
            batch_id = batch.batch_id,
            readings = batch.readings.len(),
            "push batch"
        );
        let ack = self.api.push(batch, Admission::FailFast).await?;
        Ok(Response::new(ack))
    }

    type PushStream = ReceiverStream<Result<PushAck, Status>>;

    async fn push(
        &self,
        request: Request<Streaming<ReadingBatch>>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let me = principal(&request)?;
        // Closed when the caller's session, token or user is revoked (on any node).
        let guard = self.api.ctx().auth().map(|auth| auth.register_stream(&me));
        let inbound = request.into_inner();
        let window = self.max_inflight_per_stream;
        // Acks wait here for the client to read them; at most `window` per stream.
        let (acks_tx, acks_rx) = mpsc::channel(window);
        tokio::spawn(pump(
            Caller {
                principal: me,
                guard,
            },
            inbound,
            self.api.clone(),
            Arc::new(Semaphore::new(window)),
            acks_tx,
        ));
        Ok(Response::new(ReceiverStream::new(acks_rx)))
    }
}

/// Who a stream belongs to, and the registration that closes it on revocation.
struct Caller {
    principal: gridmesh_auth::Principal,
    guard: Option<gridmesh_actors::auth::StreamGuard>,
}

/// Reads batches while fewer than `window` are unacknowledged. Not reading is the flow control:
/// HTTP/2 windows fill and the client's sends wait. Ends with UNAUTHENTICATED when the
/// caller's credentials are revoked.
async fn pump(
    mut caller: Caller,
    mut inbound: Streaming<ReadingBatch>,
    api: Api,
    window: Arc<Semaphore>,
    acks: mpsc::Sender<Result<PushAck, Status>>,
) {
    loop {
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let next = match caller.guard.as_mut() {
            Some(guard) => tokio::select! {
                next = inbound.message() => next,
                () = guard.revoked() => {
                    let _ = acks.send(Err(gridmesh_actors::auth::unauthenticated())).await;
                    return;
                }
            },
            None => inbound.message().await,
        };
        let batch = match next {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), "push stream ended with an error");
                return;
            }
        };
        let (api, acks, principal) = (api.clone(), acks.clone(), caller.principal.clone());
        tokio::spawn(async move {
            let result = match scope::batch(api.ctx(), &principal, &batch).await {
                Ok(()) => api.push(batch, Admission::Wait).await,
                Err(status) => Err(status),
            };
            let _ = acks.send(result).await;
            drop(permit);
        });
    }
}
