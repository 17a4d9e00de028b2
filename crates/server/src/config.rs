//! The configuration file of `quorumkv serve` (`--config`, or `QUORUMKV_CONFIG`).
//!
//! A TOML file whose keys are the long flags of `serve` without the dashes, with
//! underscores or dashes alike (`node_id`, `max-value-bytes`); `seeds` may be an array.
//! Precedence, highest first: command-line flags, `QUORUMKV_*` environment variables, the
//! file, the built-in defaults. The file is applied by filling in the environment variable
//! of each key that is not already set, before the flags are parsed, so one parser checks
//! every value whatever its source, and an invalid one stops the node at start with a
//! message naming the option. An unknown key is refused (a typo must not be ignored).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};
use clap::CommandFactory;

use crate::cli::Cli;

/// The flag that names the file.
const FLAG: &str = "--config";
/// Its environment variable.
const ENV: &str = "QUORUMKV_CONFIG";

/// Finds the configuration file named on `args` (or by `QUORUMKV_CONFIG`) of a `serve`
/// command, and applies it. Other commands take no file.
pub fn apply(args: &[OsString]) -> anyhow::Result<()> {
    if args.get(1).and_then(|a| a.to_str()) != Some("serve") {
        return Ok(());
    }
    let named = args
        .windows(2)
        .find_map(|pair| (pair[0] == FLAG).then(|| pair[1].clone()));
    let inline = args.iter().find_map(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--config="))
            .map(OsString::from)
    });
    let Some(path) = named.or(inline).or_else(|| std::env::var_os(ENV)) else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read it", Path::new(&path).display()))?;
    for (name, value) in settings(&text)? {
        if std::env::var_os(&name).is_none() {
            // Before any thread exists: the process is still single-threaded here.
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

/// The environment variable and value of each setting of a configuration file.
pub fn settings(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let table: toml::Table = text.parse().context("--config: not valid TOML")?;
    let known = serve_options();
    let mut out = BTreeMap::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some((_, env)) = known
            .iter()
            .find(|(long, _)| *long == flag && long != "config")
        else {
            bail!("--config: unknown option {key:?} (the keys are serve's long flags, e.g. node_id, listen, seeds)");
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(s) => Ok(s.clone()),
                    other => bail!("--config: {key} must hold strings, found {other}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?
                .join(","),
            other => {
                bail!("--config: {key} must be a string, number, boolean or list, found {other}")
            }
        };
        out.insert(env.clone(), text);
    }
    Ok(out)
}

/// (long flag, environment variable) of every option of `serve` that has both.
fn serve_options() -> Vec<(String, String)> {
    let command = Cli::command();
    let Some(serve) = command.find_subcommand("serve") else {
        return Vec::new();
    };
    serve
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?.to_string();
            let env = arg.get_env()?.to_str()?.to_string();
            Some((long, env))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn keys_become_the_options_environment_variables() {
        let settings = settings(
            "node_id = \"n1\"\nmax-value-bytes = 4096\nseeds = [\"a:1\", \"b:2\"]\nread_repair = false\nphi_threshold = 2.5\n",
        )
        .unwrap();
        assert_eq!(settings["QUORUMKV_NODE_ID"], "n1");
        assert_eq!(settings["QUORUMKV_MAX_VALUE_BYTES"], "4096");
        assert_eq!(settings["QUORUMKV_SEEDS"], "a:1,b:2");
        assert_eq!(settings["QUORUMKV_READ_REPAIR"], "false");
        assert_eq!(settings["QUORUMKV_PHI_THRESHOLD"], "2.5");
    }

    #[test]
    fn unknown_keys_and_bad_files_are_refused_naming_the_problem() {
        let error = settings("max_value_byte = 1\n").unwrap_err().to_string();
        assert!(error.contains("max_value_byte"), "{error}");
        assert!(settings("node_id = \n").is_err());
        assert!(settings("seeds = [1, 2]\n")
            .unwrap_err()
            .to_string()
            .contains("seeds"));
    }

    #[test]
    fn the_example_file_lists_only_real_options() {
        let example = include_str!("../../../config/quorumkv.example.toml");
        let keys = settings(example).unwrap();
        // Every option of serve is in the example, documented.
        for (long, env) in serve_options()
            .into_iter()
            .filter(|(long, _)| long != "config")
        {
            assert!(
                keys.contains_key(&env)
                    || example.contains(&format!("# {}", long.replace('-', "_"))),
                "the example does not mention {long}"
            );
        }
    }
}
