//! Feeder scope: a user limited to some feeders sees and does nothing outside them.
//!
//! Services call these after the auth layer allowed the call. A meter that does not exist and
//! a meter outside the scope get the same `PERMISSION_DENIED`, so a scoped user cannot probe
//! which meters exist elsewhere. Admins and users without a scope pass without a lookup.

use std::collections::HashMap;
use std::sync::Arc;

use gridmesh_actors::context::NodeContext;
use gridmesh_auth::Principal;
use gridmesh_proto::v1::ReadingBatch;
use tonic::Status;

use crate::status;

/// The refusal for anything outside the caller's scope.
pub fn outside() -> Status {
    Status::permission_denied("outside your feeder scope")
}

/// Checks that `feeder` is in scope.
pub fn feeder(principal: &Principal, feeder: &str) -> Result<(), Status> {
    if principal.may_see_feeder(feeder) {
        Ok(())
    } else {
        Err(outside())
    }
}

/// Checks that `meter` is registered on a feeder in scope.
pub async fn meter(
    ctx: &Arc<NodeContext>,
    principal: &Principal,
    meter: &str,
) -> Result<(), Status> {
    if !principal.is_scoped() {
        return Ok(());
    }
    let (ctx, meter, principal) = (ctx.clone(), meter.to_owned(), principal.clone());
    gridmesh_actors::status::blocking(move || {
        let info = ctx
            .store
            .meter_info(&meter)
            .map_err(|e| status::internal(&e))?;
        match info {
            Some(info) if principal.may_see_feeder(&info.feeder_id) => Ok(()),
            _ => Err(outside()),
        }
    })
    .await
}

/// Checks that every reading of `batch` is of a meter in scope (all or nothing: a batch with
/// one reading outside is refused whole, before anything is stored).
pub async fn batch(
    ctx: &Arc<NodeContext>,
    principal: &Principal,
    batch: &ReadingBatch,
) -> Result<(), Status> {
    if !principal.is_scoped() {
        return Ok(());
    }
    let meters: Vec<String> = batch.readings.iter().map(|r| r.meter_id.clone()).collect();
    let (ctx, principal) = (ctx.clone(), principal.clone());
    gridmesh_actors::status::blocking(move || {
        let mut seen: HashMap<String, bool> = HashMap::new();
        for meter in meters {
            if let Some(ok) = seen.get(&meter) {
                if !ok {
                    return Err(outside());
                }
                continue;
            }
            let info = ctx
                .store
                .meter_info(&meter)
                .map_err(|e| status::internal(&e))?;
            let ok = info.is_some_and(|i| principal.may_see_feeder(&i.feeder_id));
            if !ok {
                return Err(outside());
            }
            seen.insert(meter, ok);
        }
        Ok(())
    })
    .await
}
