//! `GatewayActor`: the one cluster-visible actor of a node.
//!
//! Peers send it heartbeats (casts) and forwarded calls (RPCs), both as protobuf bytes. It
//! decodes them with errors handled (a frame that does not decode is counted, logged and
//! answered `INVALID_ARGUMENT`, never a panic) and never works inside its own handler: calls
//! run as tasks, at most `max_inflight` at once; beyond that they are answered
//! `RESOURCE_EXHAUSTED` at once instead of queueing, so the mailbox drains as fast as frames
//! arrive and heartbeats are never stuck behind slow work.
//!
//! Supervised by the node supervisor (one_for_one, like every child); a restarted gateway
//! joins its process group again and peers see the new reference on their next lookup.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gridmesh_proto::internal::{ClusterReply, ClusterRequest, Heartbeat};
use prost::Message;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::Semaphore;

use super::runtime::MembershipMsg;
use super::{Cluster, error_reply, gateway_group};

/// What a node does with what its gateway receives.
pub trait LocalHandler: Send + Sync + 'static {
    /// Answers a forwarded call.
    fn handle(&self, request: ClusterRequest)
    -> Pin<Box<dyn Future<Output = ClusterReply> + Send>>;
    /// Copies the registry entries this node lacks from `peer`; resolves to how many.
    fn sync_registry(
        &self,
        peer: String,
    ) -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;
}

/// Messages of the gateway. Cluster-visible: variants and fields are the wire format, so they
/// only carry encoded protobuf (`gridmesh.internal.v1`); evolve those, not this enum.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// An encoded `Heartbeat`.
    Heartbeat(Vec<u8>),
    /// An encoded `ClusterRequest`; the reply is an encoded `ClusterReply`.
    #[rpc]
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// The gateway actor.
#[derive(Debug)]
pub struct GatewayActor;

/// Start-up arguments of the gateway.
pub struct GatewayArgs {
    /// The node's cluster handle (its name names the process group).
    pub cluster: Arc<Cluster>,
    /// Where work goes.
    pub handler: Arc<dyn LocalHandler>,
    /// Calls handled at once.
    pub max_inflight: usize,
}

impl std::fmt::Debug for GatewayArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayArgs")
            .field("node", &self.cluster.name())
            .field("max_inflight", &self.max_inflight)
            .finish_non_exhaustive()
    }
}

/// State of the gateway.
pub struct GatewayState {
    cluster: Arc<Cluster>,
    handler: Arc<dyn LocalHandler>,
    slots: Arc<Semaphore>,
}

impl Actor for GatewayActor {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = GatewayArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        args: GatewayArgs,
    ) -> Result<GatewayState, ActorProcessingErr> {
        ractor::pg::join(gateway_group(args.cluster.name()), vec![myself.get_cell()]);
        Ok(GatewayState {
            cluster: args.cluster,
            handler: args.handler,
            slots: Arc::new(Semaphore::new(args.max_inflight)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Heartbeat(bytes) => match Heartbeat::decode(bytes.as_slice()) {
                Ok(heartbeat) => {
                    if let Some(membership) = state.cluster.membership_actor() {
                        let _ = membership.cast(MembershipMsg::Heard(heartbeat));
                    }
                }
                Err(e) => bad_frame("heartbeat", &e),
            },
            GatewayMsg::Call(bytes, reply) => {
                let request = match ClusterRequest::decode(bytes.as_slice()) {
                    Ok(request) => request,
                    Err(e) => {
                        bad_frame("call", &e);
                        let status = tonic::Status::invalid_argument(format!(
                            "undecodable cluster request: {e}"
                        ));
                        let _ = reply.send(error_reply(&status).encode_to_vec());
                        return Ok(());
                    }
                };
                let Ok(permit) = state.slots.clone().try_acquire_owned() else {
                    metrics::counter!("gridmesh_gateway_busy_total").increment(1);
                    let status = tonic::Status::resource_exhausted(
                        "the owner node has too many forwarded calls in flight; retry",
                    );
                    let _ = reply.send(error_reply(&status).encode_to_vec());
                    return Ok(());
                };
                let work = state.handler.handle(request);
                tokio::spawn(async move {
                    let answer = work.await;
                    let _ = reply.send(answer.encode_to_vec());
                    drop(permit);
                });
            }
        }
        Ok(())
    }
}

fn bad_frame(what: &str, error: &prost::DecodeError) {
    metrics::counter!("gridmesh_cluster_bad_frames_total").increment(1);
    tracing::warn!(error = %error, "undecodable {what} from a peer; dropped");
}
