//! `QueryService`: readings, meter status and feeder load, answered by the owners of the data
//! wherever the call arrives. Feeder scope applies to every method (see [`crate::scope`]).

use gridmesh_actors::api::Api;
use gridmesh_proto::v1::query_service_server::QueryService;
use gridmesh_proto::v1::{
    GetAggregatesRequest, GetAggregatesResponse, GetFeederLoadRequest, GetFeederLoadResponse,
    GetForecastRequest, GetForecastResponse, GetMeterAnomaliesRequest, GetMeterAnomaliesResponse,
    GetMeterStatusRequest, GetReadingsRequest, GetReadingsResponse, GetReliabilityRequest,
    GetReliabilityResponse, GetValidatedIntervalsRequest, GetValidatedIntervalsResponse,
    MeterStatus,
};
use tonic::{Request, Response, Status};

use crate::authn::principal;
use crate::scope;

/// The query service.
#[derive(Debug, Clone)]
pub struct QueryApi {
    api: Api,
}

impl QueryApi {
    /// A service over the node's API.
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_readings(
        &self,
        request: Request<GetReadingsRequest>,
    ) -> Result<Response<GetReadingsResponse>, Status> {
        let me = principal(&request)?;
        scope::meter(self.api.ctx(), &me, &request.get_ref().meter_id).await?;
        self.api
            .get_readings(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_meter_status(
        &self,
        request: Request<GetMeterStatusRequest>,
    ) -> Result<Response<MeterStatus>, Status> {
        let me = principal(&request)?;
        scope::meter(self.api.ctx(), &me, &request.get_ref().meter_id).await?;
        self.api
            .get_meter_status(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_feeder_load(
        &self,
        request: Request<GetFeederLoadRequest>,
    ) -> Result<Response<GetFeederLoadResponse>, Status> {
        scope::feeder(&principal(&request)?, &request.get_ref().feeder_id)?;
        self.api
            .get_feeder_load(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_forecast(
        &self,
        request: Request<GetForecastRequest>,
    ) -> Result<Response<GetForecastResponse>, Status> {
        scope::feeder(&principal(&request)?, &request.get_ref().feeder_id)?;
        self.api
            .get_forecast(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_validated_intervals(
        &self,
        request: Request<GetValidatedIntervalsRequest>,
    ) -> Result<Response<GetValidatedIntervalsResponse>, Status> {
        let me = principal(&request)?;
        scope::meter(self.api.ctx(), &me, &request.get_ref().meter_id).await?;
        self.api
            .get_validated_intervals(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_meter_anomalies(
        &self,
        request: Request<GetMeterAnomaliesRequest>,
    ) -> Result<Response<GetMeterAnomaliesResponse>, Status> {
        let me = principal(&request)?;
        scope::meter(self.api.ctx(), &me, &request.get_ref().meter_id).await?;
        self.api
            .get_meter_anomalies(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_reliability(
        &self,
        request: Request<GetReliabilityRequest>,
    ) -> Result<Response<GetReliabilityResponse>, Status> {
        scope::feeder(&principal(&request)?, &request.get_ref().feeder_id)?;
        self.api
            .get_reliability(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn get_aggregates(
        &self,
        request: Request<GetAggregatesRequest>,
    ) -> Result<Response<GetAggregatesResponse>, Status> {
        let me = principal(&request)?;
        let req = request.get_ref();
        if req.meter_id.is_empty() {
            scope::feeder(&me, &req.feeder_id)?;
        } else {
            scope::meter(self.api.ctx(), &me, &req.meter_id).await?;
        }
        self.api
            .get_aggregates(request.into_inner())
            .await
            .map(Response::new)
    }
}
