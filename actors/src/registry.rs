//! The meter and feeder registry: validation and durable updates.
//!
//! Registry writes go through the group-commit writer like everything else, so a registration
//! is durable when the call returns. A topology import is validated completely and then written
//! as one atomic batch: a file with one bad row changes nothing. Meters whose entry changed are
//! passivated so that their next activation reads the new entry.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use gridmesh_proto::ids::{check_feeder_id, check_meter_id};
use gridmesh_proto::v1::{FeederInfo, MeterInfo, ServiceType};
use prost::Message;

use crate::context::NodeContext;
use crate::feeder::FeederSupervisorMsg;
use crate::keys;
use crate::placement::shard_of;
use crate::shard::ShardMsg;
use crate::storage::StoreError;
use crate::writer::{Row, Space, WriteError};

/// Registry errors.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A field is invalid; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// The meter references a feeder that is not registered.
    #[error(
        "meter {meter} references feeder {feeder}, which is not registered; register the feeder \
     first"
    )]
    UnknownFeeder {
        /// The meter.
        meter: String,
        /// The missing feeder.
        feeder: String,
    },
    /// Reading the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Counts of an import (or single registration).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportCounts {
    /// Feeders created.
    pub feeders_created: u32,
    /// Feeders replaced.
    pub feeders_updated: u32,
    /// Meters created.
    pub meters_created: u32,
    /// Meters replaced.
    pub meters_updated: u32,
}

/// Most transformers one feeder lists.
pub const MAX_TRANSFORMERS: usize = 10_000;

/// Checks a feeder entry on its own.
pub fn validate_feeder(feeder: &FeederInfo) -> Result<(), RegistryError> {
    check_feeder_id(&feeder.feeder_id).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let rating = feeder.rating_kva;
    if !rating.is_finite() || rating <= 0.0 || rating > 1e6 {
        return Err(RegistryError::Invalid(format!(
            "feeder {}: rating_kva = {rating} must be a positive number of kVA up to 1e6",
            feeder.feeder_id
        )));
    }
    if !feeder.head_meter_id.is_empty() {
        check_meter_id(&feeder.head_meter_id).map_err(|e| {
            RegistryError::Invalid(format!("feeder {}: head_meter_id: {e}", feeder.feeder_id))
        })?;
    }
    if feeder.transformers.len() > MAX_TRANSFORMERS {
        return Err(RegistryError::Invalid(format!(
            "feeder {}: {} transformers, at most {MAX_TRANSFORMERS}",
            feeder.feeder_id,
            feeder.transformers.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for t in &feeder.transformers {
        let id = &t.transformer_id;
        check_feeder_id(id).map_err(|e| {
            RegistryError::Invalid(format!(
                "feeder {}: transformer_id: {}",
                feeder.feeder_id,
                e.to_string().replace("feeder", "transformer")
            ))
        })?;
        if !seen.insert(id.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "feeder {}: transformer {id} is listed twice",
                feeder.feeder_id
            )));
        }
        let rating = t.rating_kva;
        if !rating.is_finite() || rating <= 0.0 || rating > 1e6 {
            return Err(RegistryError::Invalid(format!(
                "feeder {}: transformer {id}: rating_kva = {rating} must be a positive number \
                 of kVA up to 1e6",
                feeder.feeder_id
            )));
        }
    }
    Ok(())
}

/// Checks a meter entry on its own (not whether its feeder exists).
pub fn validate_meter(meter: &MeterInfo) -> Result<(), RegistryError> {
    check_meter_id(&meter.meter_id).map_err(|e| RegistryError::Invalid(e.to_string()))?;
    let id = &meter.meter_id;
    check_feeder_id(&meter.feeder_id)
        .map_err(|e| RegistryError::Invalid(format!("meter {id}: feeder_id: {e}")))?;
    if !meter.transformer_id.is_empty() {
        check_feeder_id(&meter.transformer_id).map_err(|e| {
            RegistryError::Invalid(format!(
                "meter {id}: transformer_id: {}",
                e.to_string().replace("feeder", "transformer")
            ))
        })?;
    }
    let nominal = meter.nominal_voltage_v;
    if !nominal.is_finite() || !(50.0..=1000.0).contains(&nominal) {
        return Err(RegistryError::Invalid(format!(
            "meter {id}: nominal_voltage_v = {nominal} must be between 50 and 1000 V \
             (e.g. 230 or 120)"
        )));
    }
    if ServiceType::try_from(meter.service_type).is_err() {
        return Err(RegistryError::Invalid(format!(
            "meter {id}: service_type {} is unknown",
            meter.service_type
        )));
    }
    Ok(())
}

/// Registers (or replaces) feeders and meters atomically.
pub async fn import(
    ctx: &Arc<NodeContext>,
    feeders: Vec<FeederInfo>,
    meters: Vec<MeterInfo>,
) -> Result<ImportCounts, RegistryError> {
    let (counts, previous_feeders) = {
        let ctx = ctx.clone();
        let (feeders, meters) = (feeders.clone(), meters.clone());
        tokio::task::spawn_blocking(move || plan(&ctx, &feeders, &meters))
            .await
            .map_err(|e| RegistryError::Invalid(format!("import task failed: {e}")))??
    };
    let mut rows = Vec::with_capacity(feeders.len() + meters.len());
    for feeder in &feeders {
        rows.push(Row::put(
            Space::Registry,
            keys::feeder_info_key(&feeder.feeder_id),
            feeder.encode_to_vec(),
        ));
    }
    for meter in &meters {
        rows.push(Row::put(
            Space::Registry,
            keys::meter_info_key(&meter.meter_id),
            meter.encode_to_vec(),
        ));
    }
    ctx.writer.write(rows).await?;
    // Head meters cache whether they are one; changed feeders must refresh them too.
    let heads = feeders
        .iter()
        .map(|f| f.head_meter_id.as_str())
        .filter(|h| !h.is_empty());
    refresh_meters(ctx, meters.iter().map(|m| m.meter_id.as_str()).chain(heads));
    // Running feeder actors rebuild their rules: new ratings, transformers, meters joining
    // or leaving (their old feeder too).
    let touched: BTreeSet<String> = feeders
        .iter()
        .map(|f| f.feeder_id.clone())
        .chain(meters.iter().map(|m| m.feeder_id.clone()))
        .chain(previous_feeders)
        .collect();
    if let Some(supervisor) = ctx.feeder_supervisor() {
        let _ = supervisor.cast(FeederSupervisorMsg::Reconfigure(
            touched.into_iter().collect(),
        ));
    }
    Ok(counts)
}

/// Validates everything and counts creations vs replacements, touching nothing; also the
/// feeders the replaced meters were on.
fn plan(
    ctx: &NodeContext,
    feeders: &[FeederInfo],
    meters: &[MeterInfo],
) -> Result<(ImportCounts, BTreeSet<String>), RegistryError> {
    let mut previous_feeders = BTreeSet::new();
    let mut counts = ImportCounts::default();
    let mut new_feeders = HashSet::new();
    for feeder in feeders {
        validate_feeder(feeder)?;
        if !new_feeders.insert(feeder.feeder_id.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "feeder {} appears twice",
                feeder.feeder_id
            )));
        }
        match ctx.store.feeder_info(&feeder.feeder_id)? {
            Some(_) => counts.feeders_updated += 1,
            None => counts.feeders_created += 1,
        }
    }
    let mut seen_meters = HashSet::new();
    let mut feeder_known: HashMap<&str, bool> = HashMap::new();
    for meter in meters {
        validate_meter(meter)?;
        if !seen_meters.insert(meter.meter_id.as_str()) {
            return Err(RegistryError::Invalid(format!(
                "meter {} appears twice",
                meter.meter_id
            )));
        }
        let feeder = meter.feeder_id.as_str();
        let known = match feeder_known.get(feeder) {
            Some(known) => *known,
            None => {
                let known =
                    new_feeders.contains(feeder) || ctx.store.feeder_info(feeder)?.is_some();
                feeder_known.insert(feeder, known);
                known
            }
        };
        if !known {
            return Err(RegistryError::UnknownFeeder {
                meter: meter.meter_id.clone(),
                feeder: feeder.to_owned(),
            });
        }
        match ctx.store.meter_info(&meter.meter_id)? {
            Some(previous) => {
                counts.meters_updated += 1;
                previous_feeders.insert(previous.feeder_id);
            }
            None => counts.meters_created += 1,
        }
    }
    Ok((counts, previous_feeders))
}

/// Asks the owning shards to passivate meters whose registry entry changed.
fn refresh_meters<'a>(ctx: &NodeContext, meters: impl Iterator<Item = &'a str>) {
    let shards = ctx.config.actors.shards;
    for meter in meters {
        if let Some(shard) = ctx.shard(shard_of(meter, shards)) {
            let _ = shard.cast(ShardMsg::Refresh(meter.to_owned()));
        }
    }
}
