//! Readers for the benchmark data: the Taylor series and SimBench CSV files.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Reads a one-column CSV with a header (the Taylor series as written by the bench script).
pub(crate) fn read_single_column(path: &str) -> Result<Vec<f64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim()
                .parse::<f64>()
                .map_err(|e| format!("{path}: {l:?}: {e}"))
        })
        .collect()
}

/// A semicolon-separated SimBench table.
pub(crate) struct Table {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn read(dir: &str, name: &str) -> Result<Table, String> {
        let path = Path::new(dir).join(name);
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| format!("{name} is empty"))?
            .split(';')
            .map(str::to_owned)
            .collect();
        let rows = lines
            .filter(|l| !l.is_empty())
            .map(|l| l.split(';').map(str::to_owned).collect())
            .collect();
        Ok(Table { header, rows })
    }

    /// Only the header of a table (the profile tables are large).
    pub(crate) fn header(dir: &str, name: &str) -> Result<Vec<String>, String> {
        let path = Path::new(dir).join(name);
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(file), &mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim_end().split(';').map(str::to_owned).collect())
    }

    pub(crate) fn column(&self, name: &str) -> Result<usize, String> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("no column {name}"))
    }
}

/// Selected columns of a profile table (LoadProfile.csv, RESProfile.csv) as series.
pub(crate) fn read_profiles(
    dir: &str,
    name: &str,
    wanted: &[String],
) -> Result<HashMap<String, Vec<f64>>, String> {
    let path = Path::new(dir).join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or("empty profile table")?
        .split(';')
        .collect();
    let columns: Vec<(usize, &String)> = wanted
        .iter()
        .map(|w| {
            header
                .iter()
                .position(|h| h == w)
                .map(|i| (i, w))
                .ok_or_else(|| format!("{name} has no column {w}"))
        })
        .collect::<Result<_, _>>()?;
    let mut out: HashMap<String, Vec<f64>> =
        wanted.iter().map(|w| (w.clone(), Vec::new())).collect();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(';').collect();
        for (i, w) in &columns {
            let v: f64 = fields
                .get(*i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("{name}: bad value in column {w}: {line:.40}"))?;
            out.get_mut(*w)
                .expect("every wanted column has a vector")
                .push(v);
        }
    }
    Ok(out)
}

/// One LV grid: its loads and generators, by profile, with their scaling in kW.
#[derive(Default)]
pub(crate) struct LvGrid {
    pub(crate) name: String,
    /// (profile column, rated kW) per load.
    pub(crate) loads: Vec<(String, f64)>,
    /// (profile column, rated kW) per generator.
    pub(crate) generators: Vec<(String, f64)>,
}

/// The LV grids (voltage level 7) of a SimBench network, by subnet name.
pub(crate) fn lv_grids(dir: &str) -> Result<BTreeMap<String, LvGrid>, String> {
    let mut grids: BTreeMap<String, LvGrid> = BTreeMap::new();
    let loads = Table::read(dir, "Load.csv")?;
    let (profile, p, subnet, level) = (
        loads.column("profile")?,
        loads.column("pLoad")?,
        loads.column("subnet")?,
        loads.column("voltLvl")?,
    );
    for row in loads.rows.iter().filter(|r| r[level] == "7") {
        let grid = grids.entry(row[subnet].clone()).or_default();
        grid.name.clone_from(&row[subnet]);
        let kw = row[p].parse::<f64>().map_err(|e| e.to_string())? * 1000.0;
        grid.loads.push((format!("{}_pload", row[profile]), kw));
    }
    let res = Table::read(dir, "RES.csv")?;
    let (profile, p, subnet, level) = (
        res.column("profile")?,
        res.column("pRES")?,
        res.column("subnet")?,
        res.column("voltLvl")?,
    );
    for row in res.rows.iter().filter(|r| r[level] == "7") {
        if let Some(grid) = grids.get_mut(&row[subnet]) {
            let kw = row[p].parse::<f64>().map_err(|e| e.to_string())? * 1000.0;
            grid.generators.push((row[profile].clone(), kw));
        }
    }
    Ok(grids)
}

/// Sum of rated kW × profile over a list of (profile, kW).
pub(crate) fn weighted_sum(
    parts: &[(String, f64)],
    profiles: &HashMap<String, Vec<f64>>,
    len: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; len];
    for (profile, kw) in parts {
        let series = &profiles[profile];
        for (o, v) in out.iter_mut().zip(series) {
            *o += kw * v;
        }
    }
    out
}

/// One grid per distinct composition. The complete SimBench data set repeats each of its LV
/// grids under many MV feeders (412 subnets, 6 compositions); evaluating copies would only
/// weight some grids more than others.
pub(crate) fn distinct_grids(grids: &BTreeMap<String, LvGrid>) -> Vec<&LvGrid> {
    type Parts = Vec<(String, u64)>;
    let mut seen: Vec<(Parts, Parts)> = Vec::new();
    let mut out = Vec::new();
    let key = |parts: &[(String, f64)]| {
        let mut k: Vec<(String, u64)> = parts
            .iter()
            .map(|(p, kw)| (p.clone(), kw.to_bits()))
            .collect();
        k.sort();
        k
    };
    for grid in grids.values().filter(|g| !g.loads.is_empty()) {
        let signature = (key(&grid.loads), key(&grid.generators));
        if !seen.contains(&signature) {
            seen.push(signature);
            out.push(grid);
        }
    }
    out
}
