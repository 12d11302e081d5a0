//! `shoal spec`: reads a cluster spec for scripts (the Slurm batch script) and
//! deployments.

use std::path::Path;

use clap::Subcommand;
use shoal::Error;
use shoal_gateway::ClusterSpec;
use shoal_gateway::k8s::{Target, to_yaml};

/// What `shoal spec` does.
#[derive(Subcommand, Debug)]
pub enum SpecCommand {
    /// Check a cluster spec and print its groups, one per line: name, workers, slots,
    /// memory in bytes (`-`: the worker's default) and resources (`-`: none).
    Groups {
        /// The cluster spec (TOML).
        file: String,
    },
    /// Print Kubernetes manifests (YAML) for a cluster spec: the scheduler's Deployment
    /// and Service and one worker Deployment per group (slots and memory as container
    /// limits, the token from a Secret).
    Kubernetes {
        /// The cluster spec (TOML).
        file: String,
        /// Prefix of the objects' names, and their `app.kubernetes.io/instance` label.
        #[arg(long, default_value = "shoal")]
        name: String,
        /// The container image (deploy/Dockerfile builds one).
        #[arg(long, default_value = "shoal:dev")]
        image: String,
        /// The Secret whose key `token` holds the cluster token.
        #[arg(long, default_value = "shoal-token")]
        secret: String,
        /// Only the worker Deployments (an overlay adding groups to a base).
        #[arg(long)]
        workers_only: bool,
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
        SpecCommand::Kubernetes {
            file,
            name,
            image,
            secret,
            workers_only,
        } => {
            let spec = ClusterSpec::from_file(&file).map_err(|e| Error::input(e.to_string()))?;
            shoal_gateway::spec::check_group_name(&name).map_err(|_| {
                Error::input(format!(
                    "--name: '{name}': expected 1 to 32 lowercase letters, digits or '-', starting with a letter"
                ))
            })?;
            let target = Target {
                cluster: name,
                image,
                secret,
                tls: None,
            };
            let objects = target.manifests(&spec, !workers_only);
            print!(
                "# Made by `shoal spec kubernetes` from {}; edit the spec, not this file.\n{}",
                Path::new(&file)
                    .file_name()
                    .map_or(file.clone(), |f| f.to_string_lossy().into()),
                to_yaml(&objects)
            );
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
