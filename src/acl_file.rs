//! ACL files, and `pehra acl` to show the effective policy and try requests against it.
//!
//! An ACL file is JSON: the operator's rules, added after the default policy
//! ([`Policy::default_for_cluster`]) unless `"defaults": false`. A rule is either an
//! object or the one-line form [`Rule`] parses:
//!
//! ```json
//! {
//!   "defaults": true,
//!   "rules": [
//!     { "effect": "allow", "principal": "name:alice", "resource": "topic:alice.*",
//!       "actions": ["produce", "consume"] },
//!     "deny name:mallory * all"
//!   ]
//! }
//! ```
//!
//! Deny wins over allow wherever a rule stands, so a file narrows the defaults with
//! deny rules and widens them with allow rules.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use pehra_shared::security::acl::{Action, Actions, Policy, Resource, ResourcePattern, Rule};
use pehra_shared::security::{kid, Identity, Role};
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    #[serde(default = "yes")]
    defaults: bool,
    #[serde(default)]
    rules: Vec<RuleForm>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RuleForm {
    Line(String),
    Object(RuleObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleObject {
    effect: String,
    principal: String,
    resource: String,
    actions: Vec<String>,
}

impl RuleForm {
    fn parse(&self) -> Result<Rule, String> {
        match self {
            RuleForm::Line(line) => line.parse().map_err(|e| format!("{e}")),
            RuleForm::Object(o) => {
                let actions: Actions = o.actions.join(",").parse().map_err(|e| format!("{e}"))?;
                Rule::new(
                    o.effect.parse().map_err(|e| format!("{e}"))?,
                    o.principal.parse().map_err(|e| format!("{e}"))?,
                    o.resource.parse().map_err(|e| format!("{e}"))?,
                    actions,
                )
                .map_err(|e| format!("{e}"))
            }
        }
    }
}

/// The policy an ACL file's text gives (`path` names it in errors).
pub fn parse(text: &str, path: &Path) -> Result<Policy> {
    let file: AclFile = serde_json::from_str(text)
        .map_err(|e| anyhow::anyhow!("ACL file {} is not valid: {e}", path.display()))?;
    let mut policy = if file.defaults {
        Policy::default_for_cluster()
    } else {
        Policy::new()
    };
    for (i, rule) in file.rules.iter().enumerate() {
        let rule = rule
            .parse()
            .map_err(|e| anyhow::anyhow!("ACL file {}: rules[{i}]: {e}", path.display()))?;
        policy.push(rule);
    }
    Ok(policy)
}

/// The policy an ACL file gives.
pub fn load(path: &Path) -> Result<Policy> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read ACL file {}", path.display()))?;
    parse(&text, path)
}

/// The policy of `file`, or the default one.
pub fn load_or_default(file: Option<&Path>) -> Result<Policy> {
    match file {
        Some(path) => load(path),
        None => Ok(Policy::default_for_cluster()),
    }
}

/// Arguments of `pehra acl`.
#[derive(Args)]
#[command(
    after_help = "An ACL file is JSON: {\"defaults\": true, \"rules\": [RULE, ...]}, \
    each RULE either \"EFFECT PRINCIPAL RESOURCE ACTIONS\" or {\"effect\", \"principal\", \
    \"resource\", \"actions\": [...]}.\n\
    EFFECT: allow | deny (deny wins).  PRINCIPAL: any | role:ROLE | name:GLOB.\n\
    RESOURCE: * | znodes:/PATH (and below) | znode:/PATH (exactly) | topic:GLOB | \
    cluster:NAME | cluster:*; {name} and {id} stand for the requester's name and number.\n\
    ACTIONS: create,read,write,delete,admin (znodes); produce,consume,create,delete,describe \
    (topics); use (cluster); all.\nSee docs/security.md."
)]
pub struct AclArgs {
    /// The ACL file (default: the built-in least-privilege policy alone).
    #[arg(long, global = true, value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(subcommand)]
    command: AclCommand,
}

#[derive(Subcommand)]
enum AclCommand {
    /// Print the effective policy, one rule a line.
    Show,
    /// Say whether a principal may do something, and why not (exit 1 when denied).
    Check {
        /// Who (an identity name: broker-2, alice, sensor-1).
        name: String,
        /// Its role.
        #[arg(long)]
        role: Role,
        /// What: znode:/PATH, topic:NAME or cluster:NAME.
        resource: String,
        /// What it does: create, read, write, delete, admin, produce, consume, describe, use.
        action: String,
    },
}

/// `pehra acl ...`.
pub fn run(args: AclArgs) -> Result<ExitCode> {
    let policy = load_or_default(args.file.as_deref())?;
    let mut out = std::io::stdout().lock();
    match args.command {
        AclCommand::Show => {
            for rule in policy.rules() {
                writeln!(out, "{rule}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        AclCommand::Check {
            name,
            role,
            resource,
            action,
        } => {
            let resource = match resource.parse::<ResourcePattern>() {
                Ok(ResourcePattern::Znode(path)) => Resource::Znode(path),
                Ok(ResourcePattern::Topics(name)) if !name.contains(['*', '{']) => {
                    Resource::Topic(name)
                }
                Ok(ResourcePattern::Cluster(c)) => Resource::Cluster(c),
                _ => anyhow::bail!(
                    "invalid resource {resource:?}: znode:/PATH, topic:NAME or cluster:NAME"
                ),
            };
            let action =
                Action::from_name(&action).with_context(|| format!("unknown action {action:?}"))?;
            let who = Identity {
                name,
                role,
                kid: kid(role, 0),
            };
            match policy.check(&who, &resource, action) {
                Ok(()) => {
                    writeln!(
                        out,
                        "allowed: {} {} may {} {resource}",
                        role.name(),
                        who.name,
                        action.name()
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(denied) => {
                    writeln!(out, "denied: {denied}")?;
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pehra_shared::security::acl::Action;

    fn who(role: Role, name: &str) -> Identity {
        Identity {
            name: name.into(),
            role,
            kid: kid(role, 1),
        }
    }

    #[test]
    fn a_file_extends_the_defaults() {
        let text = r#"{
            "rules": [
                {"effect": "allow", "principal": "name:sensor-*", "resource": "topic:alarms",
                 "actions": ["produce"]},
                "deny name:mallory * all"
            ]
        }"#;
        let policy = parse(text, Path::new("acl.json")).unwrap();
        let topic = |t: &str| Resource::Topic(t.into());
        assert!(policy
            .check(
                &who(Role::Device, "sensor-1"),
                &topic("alarms"),
                Action::Produce
            )
            .is_ok());
        assert!(policy
            .check(
                &who(Role::Device, "sensor-1"),
                &topic("readings"),
                Action::Produce
            )
            .is_ok());
        assert!(policy
            .check(
                &who(Role::Client, "mallory"),
                &topic("readings"),
                Action::Consume
            )
            .is_err());
        assert!(policy
            .check(
                &who(Role::Client, "alice"),
                &topic("readings"),
                Action::Consume
            )
            .is_ok());
        let alone = parse(
            r#"{"defaults": false, "rules": ["allow any topic:x produce"]}"#,
            Path::new("a"),
        )
        .unwrap();
        assert_eq!(alone.rules().len(), 1);
    }

    #[test]
    fn errors_name_the_file_and_the_rule() {
        let e = parse(
            r#"{"rules": ["allow any topic:x read"]}"#,
            Path::new("acl.json"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "ACL file acl.json: rules[0]: read is not an action on topics (topic:x)"
        );
        let e = parse(r#"{"rule": []}"#, Path::new("acl.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("ACL file acl.json is not valid: unknown field `rule`"),
            "{e}"
        );
        let e = parse("{", Path::new("acl.json")).unwrap_err().to_string();
        assert!(e.starts_with("ACL file acl.json is not valid"), "{e}");
    }
}
