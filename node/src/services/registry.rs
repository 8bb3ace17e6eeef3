//! `RegistryService`: meters and feeders. Reads apply the caller's feeder scope; writes are
//! for admins only (the permission table), who are never scoped.

use std::sync::Arc;

use gridmesh_actors::api::Api;
use gridmesh_actors::context::NodeContext;
use gridmesh_proto::ids::{check_feeder_id, check_meter_id};
use gridmesh_proto::v1::registry_service_server::RegistryService;
use gridmesh_proto::v1::{
    FeederInfo, GetFeederRequest, GetMeterRequest, ImportTopologyRequest, ImportTopologyResponse,
    ListFeedersRequest, ListFeedersResponse, MeterInfo, RegisterFeederRequest,
    RegisterFeederResponse, RegisterMeterRequest, RegisterMeterResponse,
};
use tonic::{Request, Response, Status};

use super::blocking;
use crate::authn::principal;
use crate::{scope, status};

/// The registry service.
#[derive(Debug, Clone)]
pub struct RegistryApi {
    api: Api,
    ctx: Arc<NodeContext>,
}

impl RegistryApi {
    /// A service over the node.
    pub fn new(api: Api) -> Self {
        let ctx = api.ctx().clone();
        Self { api, ctx }
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
        let counts = self
            .api
            .import_topology(ImportTopologyRequest {
                feeders: vec![],
                meters: vec![meter],
            })
            .await?;
        Ok(Response::new(RegisterMeterResponse {
            created: counts.meters_created == 1,
        }))
    }

    async fn get_meter(
        &self,
        request: Request<GetMeterRequest>,
    ) -> Result<Response<MeterInfo>, Status> {
        let me = principal(&request)?;
        let meter_id = request.into_inner().meter_id;
        check_meter_id(&meter_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let ctx = self.ctx.clone();
        let info = blocking(move || {
            ctx.store
                .meter_info(&meter_id)
                .map_err(|e| status::internal(&e))
        })
        .await?;
        match info {
            // Unknown and out-of-scope meters look the same to a scoped user.
            Some(info) if me.may_see_feeder(&info.feeder_id) => Ok(Response::new(info)),
            _ if me.is_scoped() => Err(scope::outside()),
            _ => Err(Status::not_found("meter is not registered")),
        }
    }

    async fn register_feeder(
        &self,
        request: Request<RegisterFeederRequest>,
    ) -> Result<Response<RegisterFeederResponse>, Status> {
        let feeder = request
            .into_inner()
            .feeder
            .ok_or_else(|| Status::invalid_argument("feeder is required"))?;
        let counts = self
            .api
            .import_topology(ImportTopologyRequest {
                feeders: vec![feeder],
                meters: vec![],
            })
            .await?;
        Ok(Response::new(RegisterFeederResponse {
            created: counts.feeders_created == 1,
        }))
    }

    async fn get_feeder(
        &self,
        request: Request<GetFeederRequest>,
    ) -> Result<Response<FeederInfo>, Status> {
        scope::feeder(&principal(&request)?, &request.get_ref().feeder_id)?;
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
        request: Request<ListFeedersRequest>,
    ) -> Result<Response<ListFeedersResponse>, Status> {
        let me = principal(&request)?;
        let ctx = self.ctx.clone();
        let mut feeders =
            blocking(move || ctx.store.feeders().map_err(|e| status::internal(&e))).await?;
        feeders.retain(|f| me.may_see_feeder(&f.feeder_id));
        Ok(Response::new(ListFeedersResponse { feeders }))
    }

    async fn import_topology(
        &self,
        request: Request<ImportTopologyRequest>,
    ) -> Result<Response<ImportTopologyResponse>, Status> {
        self.api
            .import_topology(request.into_inner())
            .await
            .map(Response::new)
    }
}
