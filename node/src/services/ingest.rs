//! `IngestService`: unary batches and bidirectional streams.

use std::sync::Arc;

use gridmesh_actors::api::Api;
use gridmesh_actors::ingest::Admission;
use gridmesh_proto::v1::ingest_service_server::IngestService;
use gridmesh_proto::v1::{PushAck, ReadingBatch};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

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
        let batch = request.into_inner();
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
        let inbound = request.into_inner();
        let window = self.max_inflight_per_stream;
        // Acks wait here for the client to read them; at most `window` per stream.
        let (acks_tx, acks_rx) = mpsc::channel(window);
        tokio::spawn(pump(
            inbound,
            self.api.clone(),
            Arc::new(Semaphore::new(window)),
            acks_tx,
        ));
        Ok(Response::new(ReceiverStream::new(acks_rx)))
    }
}

/// Reads batches while fewer than `window` are unacknowledged. Not reading is the flow control:
/// HTTP/2 windows fill and the client's sends wait.
async fn pump(
    mut inbound: Streaming<ReadingBatch>,
    api: Api,
    window: Arc<Semaphore>,
    acks: mpsc::Sender<Result<PushAck, Status>>,
) {
    loop {
        let Ok(permit) = window.clone().acquire_owned().await else {
            return;
        };
        let batch = match inbound.message().await {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(code = ?status.code(), "push stream ended with an error");
                return;
            }
        };
        let (api, acks) = (api.clone(), acks.clone());
        tokio::spawn(async move {
            let result = api.push(batch, Admission::Wait).await;
            let _ = acks.send(result).await;
            drop(permit);
        });
    }
}
