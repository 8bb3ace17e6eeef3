//! `RegistryService`: meters and feeders.

use std::sync::Arc;

use gridmesh_actors::context::NodeContext;
use gridmesh_actors::registry;
use gridmesh_proto::ids::{check_feeder_id, check_meter_id};
use gridmesh_proto::v1::registry_service_server::RegistryService;
use gridmesh_proto::v1::{
    FeederInfo, GetFeederRequest, GetMeterRequest, ImportTopologyRequest, ImportTopologyResponse,
    ListFeedersRequest, ListFeedersResponse, MeterInfo, RegisterFeederRequest,
    RegisterFeederResponse, RegisterMeterRequest, RegisterMeterResponse,
};
use tonic::{Request, Response, Status};

use super::blocking;
use crate::status;

/// Most entries in one import call.
const MAX_IMPORT_ENTRIES: usize = 200_000;

/// The registry service.
#[derive(Debug, Clone)]
pub struct RegistryApi {
    ctx: Arc<NodeContext>,
}

impl RegistryApi {
    /// A service over the node.
    pub fn new(ctx: Arc<NodeContext>) -> Self {
        Self { ctx }
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn register_meter(
        &self,
        request: Request<RegisterMeterRequest>,
    ) -> Result<Response<RegisterMeterResponse>, Status> {
        let meter = request
            .into_inner()
            .meter
            .ok_or_else(|| Status::invalid_argument("meter is required"))?;
        let counts = registry::import(&self.ctx, vec![], vec![meter])
            .await
            .map_err(status::registry)?;
        Ok(Response::new(RegisterMeterResponse {
            created: counts.meters_created == 1,
        }))
    }

    async fn get_meter(
        &self,
        request: Request<GetMeterRequest>,
    ) -> Result<Response<MeterInfo>, Status> {
        let meter_id = request.into_inner().meter_id;
        check_meter_id(&meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ctx = self.ctx.clone();
        let info = blocking(move || {
            ctx.store
                .meter_info(&meter_id)
                .map_err(|e| status::internal(&e))
        })
        .await?;
        info.map(Response::new)
            .ok_or_else(|| Status::not_found("meter is not registered"))
    }

    async fn register_feeder(
        &self,
        request: Request<RegisterFeederRequest>,
    ) -> Result<Response<RegisterFeederResponse>, Status> {
        let feeder = request
            .into_inner()
            .feeder
            .ok_or_else(|| Status::invalid_argument("feeder is required"))?;
        let counts = registry::import(&self.ctx, vec![feeder], vec![])
            .await
            .map_err(status::registry)?;
        Ok(Response::new(RegisterFeederResponse {
            created: counts.feeders_created == 1,
        }))
    }

    async fn get_feeder(
        &self,
        request: Request<GetFeederRequest>,
    ) -> Result<Response<FeederInfo>, Status> {
        let feeder_id = request.into_inner().feeder_id;
        check_feeder_id(&feeder_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ctx = self.ctx.clone();
        let info = blocking(move || {
            ctx.store
                .feeder_info(&feeder_id)
                .map_err(|e| status::internal(&e))
        })
        .await?;
        info.map(Response::new)
            .ok_or_else(|| Status::not_found("feeder is not registered"))
    }

    async fn list_feeders(
        &self,
        _: Request<ListFeedersRequest>,
    ) -> Result<Response<ListFeedersResponse>, Status> {
        let ctx = self.ctx.clone();
        let feeders =
            blocking(move || ctx.store.feeders().map_err(|e| status::internal(&e))).await?;
        Ok(Response::new(ListFeedersResponse { feeders }))
    }

    async fn import_topology(
        &self,
        request: Request<ImportTopologyRequest>,
    ) -> Result<Response<ImportTopologyResponse>, Status> {
        let ImportTopologyRequest { feeders, meters } = request.into_inner();
        if feeders.len() + meters.len() > MAX_IMPORT_ENTRIES {
            return Err(Status::invalid_argument(format!(
                "{} entries in one import; split it into calls of at most {MAX_IMPORT_ENTRIES}",
                feeders.len() + meters.len()
            )));
        }
        let counts = registry::import(&self.ctx, feeders, meters)
            .await
            .map_err(status::registry)?;
        Ok(Response::new(ImportTopologyResponse {
            feeders_created: counts.feeders_created,
            feeders_updated: counts.feeders_updated,
            meters_created: counts.meters_created,
            meters_updated: counts.meters_updated,
        }))
    }
}
