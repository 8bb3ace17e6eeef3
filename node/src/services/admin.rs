//! `AdminService`: members, the shard map and per-node statistics, as the answering node sees
//! them.

use gridmesh_actors::api::Api;
use gridmesh_actors::membership::MemberState as State;
use gridmesh_proto::v1::admin_service_server::AdminService;
use gridmesh_proto::v1::{
    DrainNodeRequest, DrainNodeResponse, GetNodeStatsRequest, GetNodeStatsResponse,
    GetReplicaStatusRequest, GetReplicaStatusResponse, GetShardMapRequest, GetShardMapResponse,
    ListActiveMetersRequest, ListActiveMetersResponse, ListMembersRequest, ListMembersResponse,
    Member, MemberState, RepairRequest, RepairResponse, ShardPlacement,
};
use tonic::{Request, Response, Status};

/// The admin service.
#[derive(Debug, Clone)]
pub struct AdminApi {
    api: Api,
}

impl AdminApi {
    /// A service over the node's API.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

fn state(state: State) -> MemberState {
    match state {
        State::Alive => MemberState::Alive,
        State::Suspect => MemberState::Suspect,
        State::Down => MemberState::Down,
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn list_members(
        &self,
        _: Request<ListMembersRequest>,
    ) -> Result<Response<ListMembersResponse>, Status> {
        let cluster = &self.api.ctx().cluster;
        let view = cluster.view();
        let now = std::time::Instant::now();
        let members = view
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| Member {
                name: m.name.clone(),
                state: state(m.state) as i32,
                incarnation: m.incarnation,
                grpc_addr: m.addresses.grpc.clone(),
                cluster_addr: m.addresses.cluster.clone(),
                draining: m.draining,
                last_heartbeat_age_ms: if i == 0 {
                    0
                } else {
                    now.saturating_duration_since(m.last_heard).as_millis() as u64
                },
                is_self: i == 0,
                shards_owned: view.map.owned_by(&m.name).count() as u32,
                joining: m.joining,
            })
            .collect();
        Ok(Response::new(ListMembersResponse {
            answered_by: cluster.name().to_owned(),
            epoch: view.epoch,
            members,
        }))
    }

    async fn get_shard_map(
        &self,
        _: Request<GetShardMapRequest>,
    ) -> Result<Response<GetShardMapResponse>, Status> {
        let cluster = &self.api.ctx().cluster;
        let map = cluster.map();
        let shards = (0..map.shards())
            .map(|shard| ShardPlacement {
                shard,
                owner: map.owner(shard).unwrap_or_default().to_owned(),
                preference: map.preference_list(shard).map(str::to_owned).collect(),
            })
            .collect();
        Ok(Response::new(GetShardMapResponse {
            answered_by: cluster.name().to_owned(),
            epoch: map.epoch(),
            shard_count: map.shards(),
            shards,
        }))
    }

    async fn drain_node(
        &self,
        request: Request<DrainNodeRequest>,
    ) -> Result<Response<DrainNodeResponse>, Status> {
        self.api
            .drain(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_node_stats(
        &self,
        request: Request<GetNodeStatsRequest>,
    ) -> Result<Response<GetNodeStatsResponse>, Status> {
        let nodes = self.api.node_stats(request.into_inner()).await;
        Ok(Response::new(GetNodeStatsResponse { nodes }))
    }

    async fn get_replica_status(
        &self,
        request: Request<GetReplicaStatusRequest>,
    ) -> Result<Response<GetReplicaStatusResponse>, Status> {
        self.api
            .replica_status(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn repair(
        &self,
        request: Request<RepairRequest>,
    ) -> Result<Response<RepairResponse>, Status> {
        self.api
            .repair(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_active_meters(
        &self,
        _: Request<ListActiveMetersRequest>,
    ) -> Result<Response<ListActiveMetersResponse>, Status> {
        let ctx = self.api.ctx();
        let active = gridmesh_actors::node::active_meters(ctx)
            .await
            .map_err(Status::unavailable)?;
        Ok(Response::new(ListActiveMetersResponse {
            answered_by: ctx.cluster.name().to_owned(),
            epoch: active.epoch,
            meter_ids: active.owned,
            copy_meter_ids: active.copies,
        }))
    }
}
