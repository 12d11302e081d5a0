//! `shoal spec`: reads a cluster spec for scripts (the Slurm batch script) and
//! deployments.

use clap::Subcommand;
use shoal::Error;
use shoal_gateway::ClusterSpec;

/// What `shoal spec` does.
#[derive(Subcommand, Debug)]
pub enum SpecCommand {
    /// Check a cluster spec and print its groups, one per line: name, workers, slots,
    /// memory in bytes (`-`: the worker's default) and resources (`-`: none).
    Groups {
        /// The cluster spec (TOML).
        file: String,
    },
}

/// Runs `shoal spec WHAT`.
pub fn run(what: SpecCommand) -> shoal::Result<()> {
    match what {
        SpecCommand::Groups { file } => {
            let spec = ClusterSpec::from_file(&file).map_err(|e| Error::input(e.to_string()))?;
            print!("{}", group_lines(&spec));
            Ok(())
        }
    }
}

/// One line per group, its fields separated by spaces.
fn group_lines(spec: &ClusterSpec) -> String {
    spec.groups
        .iter()
        .map(|(name, g)| {
            let memory = g.memory.map_or("-".to_string(), |m| m.to_string());
            let resources = match g.resources.is_empty() {
                true => "-".to_string(),
                false => g.resources.to_string(),
            };
            format!("{name} {} {} {memory} {resources}\n", g.workers, g.slots)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_listed_one_per_line() {
        let spec = ClusterSpec::from_toml(
            "[groups.cpu]\nworkers = 4\nslots = 2\nmemory = \"1GiB\"\n\
             [groups.gpu]\nresources = \"gpu=1\"\n",
            "c.toml",
        )
        .unwrap();
        assert_eq!(
            group_lines(&spec),
            "cpu 4 2 1073741824 -\ngpu 1 1 - gpu=1\n"
        );
    }
}
