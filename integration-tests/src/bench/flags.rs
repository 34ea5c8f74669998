//! Bench settings from `--name value` / `--name=value` flags or environment
//! variables (flags win), so `deploy/bench.sh` and `cargo bench -- …` both
//! reach them.

use std::collections::BTreeMap;
use std::str::FromStr;

/// The settings a bench was given.
pub struct Flags {
    values: BTreeMap<String, String>,
}

impl Flags {
    /// Reads `known` flags, each with its environment variable, from the
    /// process's arguments and environment. An unknown flag is an error;
    /// `--bench`, which `cargo bench` passes to every bench binary, is
    /// ignored.
    pub fn read(known: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::parse(known, std::env::args().skip(1), |var| {
            std::env::var(var).ok()
        })
    }

    fn parse(
        known: &[(&str, &str)],
        args: impl IntoIterator<Item = String>,
        var: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let mut values = BTreeMap::new();
        for (flag, env) in known {
            if let Some(value) = var(env) {
                values.insert((*flag).to_owned(), value);
            }
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--") else {
                continue;
            };
            let (name, value) = match flag.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (flag.to_owned(), None),
            };
            if name == "bench" {
                continue;
            }
            anyhow::ensure!(
                known.iter().any(|(known, _)| *known == name),
                "unknown flag --{name}"
            );
            let value = match value {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--{name} needs a value"))?,
            };
            values.insert(name, value);
        }
        Ok(Self { values })
    }

    /// The value of `name`, or `default`.
    pub fn get(&self, name: &str, default: &str) -> String {
        self.values
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// The value of `name` parsed, or `default` parsed.
    pub fn parse_or<T: FromStr>(&self, name: &str, default: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let text = self.get(name, default);
        text.trim()
            .parse()
            .map_err(|error| anyhow::anyhow!("--{name} {text}: {error}"))
    }

    /// A comma-separated list, each item parsed.
    pub fn list_or<T: FromStr>(&self, name: &str, default: &str) -> anyhow::Result<Vec<T>>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name, default)
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(|item| {
                item.trim()
                    .parse()
                    .map_err(|error| anyhow::anyhow!("--{name} {item}: {error}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: [(&str, &str); 2] = [("secs", "BENCH_SECS"), ("rates", "BENCH_RATES")];

    fn parse(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<Flags> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Flags::parse(
            &KNOWN,
            args.iter().map(|arg| (*arg).to_owned()),
            move |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn flags_win_over_the_environment_and_both_forms_parse() {
        let flags = parse(
            &["--bench", "--secs", "20", "--rates=5,10"],
            &[("BENCH_SECS", "9")],
        )
        .unwrap();
        assert_eq!(flags.parse_or::<u64>("secs", "1").unwrap(), 20);
        assert_eq!(flags.list_or::<u32>("rates", "1").unwrap(), [5, 10]);
        let flags = parse(&[], &[("BENCH_SECS", "9")]).unwrap();
        assert_eq!(flags.parse_or::<u64>("secs", "1").unwrap(), 9);
        assert_eq!(flags.list_or::<u32>("rates", "25,50").unwrap(), [25, 50]);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        assert!(parse(&["--nope", "1"], &[]).is_err());
        assert!(parse(&["--secs"], &[]).is_err());
        assert!(
            parse(&["--secs", "x"], &[])
                .unwrap()
                .parse_or::<u64>("secs", "1")
                .is_err()
        );
    }
}
