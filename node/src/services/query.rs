//! `QueryService`: readings, meter status and feeder load.

use std::sync::Arc;

use gridmesh_actors::context::NodeContext;
use gridmesh_actors::placement::shard_of;
use gridmesh_actors::query;
use gridmesh_actors::shard::ShardMsg;
use gridmesh_proto::ids::{check_feeder_id, check_meter_id};
use gridmesh_proto::v1::query_service_server::QueryService;
use gridmesh_proto::v1::{
    GetFeederLoadRequest, GetFeederLoadResponse, GetMeterStatusRequest, GetReadingsRequest,
    GetReadingsResponse, MeterStatus, Resolution,
};
use tonic::{Request, Response, Status};

use super::blocking;
use crate::status;

/// How long a status request may wait for the meter actor, ms.
const STATUS_TIMEOUT_MS: u64 = 5_000;

/// The query service.
#[derive(Debug, Clone)]
pub struct QueryApi {
    ctx: Arc<NodeContext>,
}

impl QueryApi {
    /// A service over the node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

fn resolution(value: i32) -> Result<Resolution, Status> {
    Resolution::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("resolution {value} is unknown")))
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_readings(
        &self,
        request: Request<GetReadingsRequest>,
    ) -> Result<Response<GetReadingsResponse>, Status> {
        let req = request.into_inner();
        check_meter_id(&req.meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resolution = resolution(req.resolution)?;
        let ctx = self.ctx.clone();
        let response = blocking(move || {
            query::readings(
                &ctx.store,
                &req.meter_id,
                req.from_ts_ms,
                req.to_ts_ms,
                resolution,
                req.limit,
            )
            .map_err(status::query)
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn get_meter_status(
        &self,
        request: Request<GetMeterStatusRequest>,
    ) -> Result<Response<MeterStatus>, Status> {
        let meter_id = request.into_inner().meter_id;
        check_meter_id(&meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let shard_id = shard_of(&meter_id, self.ctx.config.actors.shards);
        let shard = self
            .ctx
            .shard(shard_id)
            .ok_or_else(|| status::actor_unavailable("the meter's shard"))?;
        let answer = ractor::call_t!(
            shard,
            |reply| ShardMsg::Status { meter_id, reply },
            STATUS_TIMEOUT_MS
        )
        .map_err(|_| status::actor_unavailable("the meter actor"))?;
        answer
            .map(Response::new)
            .ok_or_else(|| Status::not_found("meter is not registered"))
    }

    async fn get_feeder_load(
        &self,
        request: Request<GetFeederLoadRequest>,
    ) -> Result<Response<GetFeederLoadResponse>, Status> {
        let req = request.into_inner();
        check_feeder_id(&req.feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let resolution = resolution(req.resolution)?;
        let ctx = self.ctx.clone();
        let response = blocking(move || {
            query::feeder_load(
                &ctx.store,
                &req.feeder_id,
                req.from_ts_ms,
                req.to_ts_ms,
                resolution,
            )
            .map_err(status::query)
        })
        .await?;
        Ok(Response::new(response))
    }
}
