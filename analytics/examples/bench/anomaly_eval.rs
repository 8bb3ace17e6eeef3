//! Anomaly-detection benchmark (filled in below).

pub(crate) fn simbench(_dir: &str, _seeds: usize) -> Result<(), String> {
    Err("anomaly benchmark not built yet".to_owned())
}
