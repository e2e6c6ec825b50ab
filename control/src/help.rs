//! What every command line of the project promises: each option explains
//! itself in `--help`. The binaries' tests hold their parsers to it.

/// The options of `cmd` and of its subcommands, at any depth, that have
/// no help text, as "SUBCOMMAND --option" (positional arguments aside:
/// their value names say what they are).
pub fn options_without_help(cmd: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    collect(cmd, &mut missing);
    missing
}

fn collect(cmd: &clap::Command, missing: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        if a.get_help().is_none() && a.get_long_help().is_none() && !a.is_positional() {
            missing.push(format!("{} --{}", cmd.get_name(), a.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        collect(sub, missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_options_without_help_at_any_depth() {
        let cmd = clap::Command::new("top")
            .arg(clap::Arg::new("ok").long("ok").help("explained"))
            .arg(clap::Arg::new("file"))
            .subcommand(
                clap::Command::new("sub")
                    .subcommand(clap::Command::new("deep").arg(clap::Arg::new("bare").long("bare"))),
            );
        assert_eq!(options_without_help(&cmd), vec!["deep --bare".to_owned()]);
    }
}
