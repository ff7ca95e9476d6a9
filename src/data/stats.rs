//! Summary statistics of a [`Dataset`]: what `cdsr-lab data stats` prints.

use serde::Serialize;

use super::{Dataset, Domain};

/// Users, items, interactions per domain and the sequence-length distribution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetStats {
    pub name: String,
    pub domain_names: [String; 2],
    pub users: usize,
    /// Users with at least one interaction in each domain.
    pub users_in_both: usize,
    /// Items in the id space of each domain.
    pub items: [usize; 2],
    /// Interactions per domain.
    pub interactions: [usize; 2],
    pub length_min: usize,
    /// Median length (mean of the two middle values for an even number of users).
    pub length_median: f64,
    pub length_mean: f64,
    pub length_max: usize,
}

impl DatasetStats {
    pub fn of(ds: &Dataset) -> DatasetStats {
        let mut interactions = [0usize; 2];
        let mut both = 0;
        let mut lens: Vec<usize> = Vec::with_capacity(ds.users.len());
        let n_a = ds.n_items[0] as u32;
        for u in &ds.users {
            let a = u.items.iter().filter(|&&i| i <= n_a).count();
            let b = u.items.len() - a;
            interactions[0] += a;
            interactions[1] += b;
            if a > 0 && b > 0 {
                both += 1;
            }
            lens.push(u.items.len());
        }
        lens.sort_unstable();
        let n = lens.len();
        let median = match n {
            0 => 0.0,
            _ if n % 2 == 1 => lens[n / 2] as f64,
            _ => (lens[n / 2 - 1] + lens[n / 2]) as f64 / 2.0,
        };
        DatasetStats {
            name: ds.name.clone(),
            domain_names: ds.domain_names.clone(),
            users: n,
            users_in_both: both,
            items: ds.n_items,
            interactions,
            length_min: lens.first().copied().unwrap_or(0),
            length_median: median,
            length_mean: if n == 0 {
                0.0
            } else {
                lens.iter().sum::<usize>() as f64 / n as f64
            },
            length_max: lens.last().copied().unwrap_or(0),
        }
    }

    pub fn total_interactions(&self) -> usize {
        self.interactions[0] + self.interactions[1]
    }

    /// The human-readable table `cdsr-lab data stats` prints.
    pub fn render(&self) -> String {
        let d = |x: Domain| format!("{} ({})", x, self.domain_names[x.index()]);
        let median = if self.length_median.fract() == 0.0 {
            format!("{}", self.length_median)
        } else {
            format!("{:.1}", self.length_median)
        };
        format!(
            "dataset       {}\n\
             users         {} ({} in both domains)\n\
             items         {} {} / {} {} / total {}\n\
             interactions  {} ({} {} / {} {})\n\
             length        min {} / median {} / mean {:.1} / max {}\n",
            self.name,
            thousands(self.users),
            thousands(self.users_in_both),
            d(Domain::A),
            thousands(self.items[0]),
            d(Domain::B),
            thousands(self.items[1]),
            thousands(self.items[0] + self.items[1]),
            thousands(self.total_interactions()),
            Domain::A,
            thousands(self.interactions[0]),
            Domain::B,
            thousands(self.interactions[1]),
            self.length_min,
            median,
            self.length_mean,
            self.length_max,
        )
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .map(|g| std::str::from_utf8(g).expect("ASCII digits"))
        .collect();
    groups.reverse();
    groups.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(7144), "7,144");
        assert_eq!(thousands(1909758), "1,909,758");
    }
}
