//! The planner: which scenarios a run will measure, grouped so that each group interleaves
//! its blocks (a root scenario and everything compared with it), and which it skips, with the
//! reason.

use super::spec::{EngineUse, Spec, Tls};
use super::table::{spec, NOT_AVAILABLE, SPECS};
use crate::Result;

/// The scenario at the end of `s`'s baseline chain (`s` itself when it has no baseline).
pub fn root_of(s: &'static Spec) -> &'static Spec {
    let mut s = s;
    while let Some(b) = s.baseline.or(s.runs_with).and_then(spec) {
        s = b;
    }
    s
}

/// The UCX engine a group needs, if any (the registry test checks that a group names at
/// most one).
pub fn group_ucx(group: &[&'static Spec]) -> Option<Tls> {
    group.iter().find_map(|s| match s.engine {
        EngineUse::Ucx(t) => Some(t),
        _ => None,
    })
}

/// What a run will do: interleaving groups, and the scenarios it was asked for that will not
/// run, with the reason.
#[derive(Debug, Default)]
pub struct Plan {
    pub groups: Vec<Vec<&'static Spec>>,
    pub skipped: Vec<(&'static str, String)>,
}

impl Plan {
    /// Every scenario that will run, in order.
    pub fn specs(&self) -> impl Iterator<Item = &'static Spec> + '_ {
        self.groups.iter().flatten().copied()
    }

    /// Takes out the scenarios `skip` selects (and those compared with one of them), noting
    /// `reason` for each.
    pub fn skip_where(&mut self, skip: impl Fn(&Spec) -> bool, reason: &str) {
        let mut gone: Vec<&'static str> = Vec::new();
        loop {
            let before = gone.len();
            for s in self.specs() {
                let depends = dependencies(s);
                if !gone.contains(&s.name) && (skip(s) || depends.iter().any(|d| gone.contains(d))) {
                    gone.push(s.name);
                }
            }
            if gone.len() == before {
                break;
            }
        }
        for g in &mut self.groups {
            g.retain(|s| !gone.contains(&s.name));
        }
        self.groups.retain(|g| !g.is_empty());
        for name in gone {
            let why = if spec(name).is_some_and(&skip) {
                reason.to_string()
            } else {
                format!("a scenario it is compared with does not run ({reason})")
            };
            self.skipped.push((name, why));
        }
    }
}

/// The scenarios `s` cannot run without: its baseline (or the group it runs with), and what
/// it is compared with.
fn dependencies(s: &Spec) -> Vec<&'static str> {
    s.baseline
        .into_iter()
        .chain(s.runs_with)
        .chain(s.also_vs.iter().copied())
        .chain(s.excess_reference)
        .collect()
}

/// Groups the selected scenarios (plus the baselines, comparisons and references they need)
/// into interleaving groups: each group is a root scenario followed by everything compared
/// with it, in registry order. Names from [`NOT_AVAILABLE`] are skipped with their reason
/// (all of them when nothing is selected); unknown names are an error.
pub fn plan(selected: &[String]) -> Result<Plan> {
    fn add(wanted: &mut Vec<&'static str>, s: &'static Spec) {
        if wanted.contains(&s.name) {
            return;
        }
        wanted.push(s.name);
        for d in dependencies(s) {
            add(wanted, spec(d).expect("the registry test checks every name"));
        }
    }
    let mut wanted: Vec<&'static str> = Vec::new();
    let mut skipped: Vec<(&'static str, String)> = Vec::new();
    if selected.is_empty() {
        for s in SPECS {
            add(&mut wanted, s);
        }
        skipped.extend(NOT_AVAILABLE.iter().map(|(n, why)| (*n, why.to_string())));
    }
    for name in selected {
        if let Some(s) = spec(name) {
            add(&mut wanted, s);
        } else if let Some((n, why)) = NOT_AVAILABLE.iter().find(|(n, _)| n == name) {
            if !skipped.iter().any(|(m, _)| m == n) {
                skipped.push((n, why.to_string()));
            }
        } else {
            let names: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
            return Err(format!("unknown scenario {name:?}; scenarios: {}", names.join(", ")).into());
        }
    }
    let mut groups: Vec<Vec<&'static Spec>> = Vec::new();
    for s in SPECS.iter().filter(|s| wanted.contains(&s.name)) {
        let root = root_of(s).name;
        match groups.iter_mut().find(|g| g[0].name == root) {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    Ok(Plan { groups, skipped })
}
