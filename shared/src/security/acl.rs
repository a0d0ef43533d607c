//! Who may do what: access-control lists over znodes, topics and the cluster's own
//! endpoints, in the spirit of ZooKeeper's and Kafka's ACLs. Sans-IO: a server asks
//! [`Policy::check`] with the [`Identity`] OSCORE authenticated, the [`Resource`] a
//! request touches and the [`Action`] it takes.
//!
//! A [`Policy`] is an ordered list of [`Rule`]s, each `{effect, principal, resource,
//! actions}`. A request is allowed when some allow rule matches it and no deny rule does
//! (deny wins, wherever it stands); when no rule matches it is denied.
//!
//! - Principals ([`PrincipalPattern`]): `any` (every authenticated identity),
//!   `role:ROLE`, or `name:GLOB` (`*` matches any run of characters).
//! - Resources ([`ResourcePattern`]): `znodes:/PATH` (the znode and everything below
//!   it, segment by segment: `/brokers` covers `/brokers/ids/1`, never `/brokersX`),
//!   `znode:/PATH` (exactly that znode), `topic:GLOB`, `cluster:NAME` (a
//!   [`ClusterResource`]), `cluster:*`, or `*` (everything). In znode patterns `*`
//!   matches within one path segment (`/topics/*/partitions/*`). Znode and topic
//!   patterns may name the requester: `{name}` is its identity name, `{id}` the number
//!   after the last `-` of its name (`broker-2` → `2`; a pattern with `{id}` never
//!   matches a name without one).
//! - Actions ([`Action`]): on znodes `create`, `read`, `write`, `delete`, `admin`; on
//!   topics `produce`, `consume`, `create`, `delete`, `describe`; on cluster resources
//!   `use`; `all` for every one.
//!
//! Rules are data: [`DEFAULT_RULES`] is the least-privilege policy by role
//! ([`Policy::default_for_cluster`]) written in the one-line form [`Rule`] parses
//! (`allow role:broker znode:/brokers/ids/{id} create,write,delete`), and an operator's
//! ACL file (read by the `pehra` binary; this crate reads no files) adds rules to it.
//!
//! Caveats for the servers that enforce it: a znode `create` is checked on the path
//! created (a sequential create on the path asked for, `/pehra/requests/r-`), so an
//! `ensure_path` of parents that already exist must be answered "exists" before the
//! ACL is consulted; a `multi` is checked op by op; and the device routes
//! (`/dev/{node}/...`) must also check that `{node}` is the requester's name.

use super::{Identity, Role};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

/// The cluster-internal endpoints, which have no finer resource than themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterResource {
    /// Broker-to-broker replication, `POST /replica`.
    Replica,
    /// Opening, renewing and closing a zookeeper session (`/session`).
    Session,
    /// The brokers' `/admin/*` routes: controlled shutdown and the like.
    Admin,
    /// PEHRA internals, `/pehra/*`: check-ins, wake-ups, elections.
    Pehra,
    /// The Pehredar's wake call to a sleeping broker (`POST /pehra/wake`): broker to
    /// broker only, as a device or client that may check in must not be able to keep
    /// every broker awake.
    PehraWake,
    /// The admin's PEHRA switch (`POST /pehra/mode`): enable or disable PEHRA.
    PehraMode,
    /// The device gateway routes, `/dev/*`.
    Device,
    /// Resource discovery, `GET /.well-known/core`.
    Discovery,
}

impl ClusterResource {
    /// Every one.
    pub const ALL: [ClusterResource; 8] = [
        ClusterResource::Replica,
        ClusterResource::Session,
        ClusterResource::Admin,
        ClusterResource::Pehra,
        ClusterResource::PehraWake,
        ClusterResource::PehraMode,
        ClusterResource::Device,
        ClusterResource::Discovery,
    ];

    /// Its name in rules (`cluster:NAME`).
    pub fn name(self) -> &'static str {
        match self {
            ClusterResource::Replica => "replica",
            ClusterResource::Session => "session",
            ClusterResource::Admin => "admin",
            ClusterResource::Pehra => "pehra",
            ClusterResource::PehraWake => "pehra-wake",
            ClusterResource::PehraMode => "pehra-mode",
            ClusterResource::Device => "device",
            ClusterResource::Discovery => "discovery",
        }
    }

    /// The resource named `name` in rules.
    pub fn from_name(name: &str) -> Option<ClusterResource> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The cluster resource a request's Uri-Path (segments joined by `/`, no leading
    /// `/`) addresses, or `None` for the data routes (znodes, topics, produce, fetch),
    /// which are checked on their znode or topic instead.
    pub fn of_uri_path(path: &str) -> Option<ClusterResource> {
        let path = path.trim_start_matches('/');
        let first = path.split('/').next().unwrap_or("");
        Some(match first {
            "replica" => ClusterResource::Replica,
            "session" => ClusterResource::Session,
            "admin" => ClusterResource::Admin,
            "pehra" if path == "pehra/mode" => ClusterResource::PehraMode,
            "pehra" if path == "pehra/wake" => ClusterResource::PehraWake,
            "pehra" => ClusterResource::Pehra,
            "dev" => ClusterResource::Device,
            ".well-known" => ClusterResource::Discovery,
            _ => return None,
        })
    }

    /// How denials name it.
    fn describe(self) -> &'static str {
        match self {
            ClusterResource::Replica => "/replica (replication)",
            ClusterResource::Session => "zookeeper sessions",
            ClusterResource::Admin => "/admin (broker administration)",
            ClusterResource::Pehra => "/pehra (PEHRA internals)",
            ClusterResource::PehraWake => "/pehra/wake (the Pehredar's wake call)",
            ClusterResource::PehraMode => "the PEHRA mode switch",
            ClusterResource::Device => "/dev (the device gateway)",
            ClusterResource::Discovery => "/.well-known/core",
        }
    }
}

/// What a request touches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// A znode, by absolute path.
    Znode(String),
    /// A topic, by name.
    Topic(String),
    /// A cluster-internal endpoint.
    Cluster(ClusterResource),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Znode(path) => f.write_str(path),
            Resource::Topic(name) => write!(f, "topic {name}"),
            Resource::Cluster(c) => f.write_str(c.describe()),
        }
    }
}

/// What a request does to its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Create a znode or a topic.
    Create,
    /// Read a znode's data or children.
    Read,
    /// Set a znode's data.
    Write,
    /// Delete a znode or a topic.
    Delete,
    /// Change a znode's ACL (reserved: znodes carry no ACLs of their own today).
    Admin,
    /// Send records to a topic.
    Produce,
    /// Fetch a topic's records (and commit offsets for them).
    Consume,
    /// Read a topic's configuration and partition state.
    Describe,
    /// Use a cluster endpoint.
    Use,
}

impl Action {
    /// Every one.
    pub const ALL: [Action; 9] = [
        Action::Create,
        Action::Read,
        Action::Write,
        Action::Delete,
        Action::Admin,
        Action::Produce,
        Action::Consume,
        Action::Describe,
        Action::Use,
    ];

    /// Its name in rules.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Admin => "admin",
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Describe => "describe",
            Action::Use => "use",
        }
    }

    /// The action named `name` in rules.
    pub fn from_name(name: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether it is an action on `kind` of resource.
    pub fn applies_to(self, kind: ResourceKind) -> bool {
        use Action::*;
        match kind {
            ResourceKind::Znode => matches!(self, Create | Read | Write | Delete | Admin),
            ResourceKind::Topic => matches!(self, Produce | Consume | Create | Delete | Describe),
            ResourceKind::Cluster => self == Use,
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The three kinds of [`Resource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// Znodes.
    Znode,
    /// Topics.
    Topic,
    /// Cluster endpoints.
    Cluster,
}

impl ResourceKind {
    fn plural(self) -> &'static str {
        match self {
            ResourceKind::Znode => "znodes",
            ResourceKind::Topic => "topics",
            ResourceKind::Cluster => "cluster resources",
        }
    }
}

impl Resource {
    /// Its kind.
    pub fn kind(&self) -> ResourceKind {
        match self {
            Resource::Znode(_) => ResourceKind::Znode,
            Resource::Topic(_) => ResourceKind::Topic,
            Resource::Cluster(_) => ResourceKind::Cluster,
        }
    }
}

/// A set of [`Action`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u16);

impl Actions {
    /// None.
    pub const NONE: Actions = Actions(0);
    /// Every action (`all`).
    pub const ALL: Actions = Actions((1 << Action::ALL.len()) - 1);

    /// These.
    pub fn of(actions: &[Action]) -> Actions {
        Actions(actions.iter().fold(0, |bits, a| bits | a.bit()))
    }

    /// Whether `action` is one.
    pub fn contains(self, action: Action) -> bool {
        self.0 & action.bit() != 0
    }

    /// Adds one.
    pub fn insert(&mut self, action: Action) {
        self.0 |= action.bit();
    }

    /// Whether there are none.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each, in [`Action::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL.into_iter().filter(move |a| self.contains(*a))
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Actions({self})")
    }
}

/// `all`, or the names joined by `,`.
impl fmt::Display for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Actions::ALL {
            return f.write_str("all");
        }
        for (i, a) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(a.name())?;
        }
        Ok(())
    }
}

/// `all` or names separated by `,`.
impl FromStr for Actions {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Actions, ParseError> {
        let mut actions = Actions::NONE;
        for name in s.split(',').map(str::trim) {
            if name == "all" {
                actions = Actions::ALL;
            } else {
                actions.insert(Action::from_name(name).ok_or_else(|| {
                    ParseError::new(format!(
                        "unknown action {name:?} (create, read, write, delete, admin, \
                         produce, consume, describe, use or all)"
                    ))
                })?);
            }
        }
        Ok(actions)
    }
}

/// A rule, action or pattern that does not parse; the message says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    message: String,
}

impl ParseError {
    fn new(message: String) -> ParseError {
        ParseError { message }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl core::error::Error for ParseError {}

/// `zookeeper`, `broker`, `client`, `device` or `admin`.
impl FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Role, ParseError> {
        [
            Role::Zookeeper,
            Role::Broker,
            Role::Client,
            Role::Device,
            Role::Admin,
        ]
        .into_iter()
        .find(|r| r.name() == s)
        .ok_or_else(|| {
            ParseError::new(format!(
                "unknown role {s:?} (zookeeper, broker, client, device or admin)"
            ))
        })
    }
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PrincipalPattern {
    /// Every authenticated identity (`any`).
    Any,
    /// Every identity of a role (`role:broker`).
    Role(Role),
    /// Identities whose name matches a glob (`name:alice`, `name:sensor-*`).
    Name(String),
}

impl PrincipalPattern {
    /// Whether `who` is one.
    pub fn matches(&self, who: &Identity) -> bool {
        match self {
            PrincipalPattern::Any => true,
            PrincipalPattern::Role(role) => who.role == *role,
            PrincipalPattern::Name(glob) => glob_match(glob, &who.name, None),
        }
    }
}

impl fmt::Display for PrincipalPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalPattern::Any => f.write_str("any"),
            PrincipalPattern::Role(role) => write!(f, "role:{}", role.name()),
            PrincipalPattern::Name(glob) => write!(f, "name:{glob}"),
        }
    }
}

/// `any`, `role:ROLE` or `name:GLOB`.
impl FromStr for PrincipalPattern {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<PrincipalPattern, ParseError> {
        if s == "any" {
            Ok(PrincipalPattern::Any)
        } else if let Some(role) = s.strip_prefix("role:") {
            Ok(PrincipalPattern::Role(role.parse()?))
        } else if let Some(glob) = s.strip_prefix("name:") {
            if glob.is_empty()
                || glob.contains(['{', '}', '/'])
                || glob.contains(char::is_whitespace)
            {
                return Err(ParseError::new(format!("invalid name pattern {glob:?}")));
            }
            Ok(PrincipalPattern::Name(glob.to_string()))
        } else {
            Err(ParseError::new(format!(
                "unknown principal {s:?} (any, role:ROLE or name:GLOB)"
            )))
        }
    }
}

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourcePattern {
    /// Everything (`*`).
    Any,
    /// A znode and everything below it, segment-wise (`znodes:/brokers`).
    Znodes(String),
    /// Exactly the znodes a path pattern names (`znode:/brokers/ids/{id}`).
    Znode(String),
    /// Topics whose name matches a glob (`topic:readings`, `topic:downlink.{name}`).
    Topics(String),
    /// One cluster endpoint (`cluster:replica`).
    Cluster(ClusterResource),
    /// Every cluster endpoint (`cluster:*`).
    AnyCluster,
}

impl ResourcePattern {
    /// Whether `resource` is one, for requester `who` (its `{name}` and `{id}`).
    pub fn matches(&self, resource: &Resource, who: &Identity) -> bool {
        match (self, resource) {
            (ResourcePattern::Any, _) => true,
            (ResourcePattern::Znodes(pattern), Resource::Znode(path)) => {
                znode_match(pattern, path, who, true)
            }
            (ResourcePattern::Znode(pattern), Resource::Znode(path)) => {
                znode_match(pattern, path, who, false)
            }
            (ResourcePattern::Topics(glob), Resource::Topic(name)) => {
                glob_match(glob, name, Some(who))
            }
            (ResourcePattern::Cluster(c), Resource::Cluster(r)) => c == r,
            (ResourcePattern::AnyCluster, Resource::Cluster(_)) => true,
            _ => false,
        }
    }

    /// The kind of resource it names (`None` for `*`).
    pub fn kind(&self) -> Option<ResourceKind> {
        match self {
            ResourcePattern::Any => None,
            ResourcePattern::Znodes(_) | ResourcePattern::Znode(_) => Some(ResourceKind::Znode),
            ResourcePattern::Topics(_) => Some(ResourceKind::Topic),
            ResourcePattern::Cluster(_) | ResourcePattern::AnyCluster => {
                Some(ResourceKind::Cluster)
            }
        }
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourcePattern::Any => f.write_str("*"),
            ResourcePattern::Znodes(p) => write!(f, "znodes:{p}"),
            ResourcePattern::Znode(p) => write!(f, "znode:{p}"),
            ResourcePattern::Topics(g) => write!(f, "topic:{g}"),
            ResourcePattern::Cluster(c) => write!(f, "cluster:{}", c.name()),
            ResourcePattern::AnyCluster => f.write_str("cluster:*"),
        }
    }
}

/// `*`, `znodes:/PATH`, `znode:/PATH`, `topic:GLOB`, `cluster:NAME` or `cluster:*`.
impl FromStr for ResourcePattern {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<ResourcePattern, ParseError> {
        if s == "*" {
            return Ok(ResourcePattern::Any);
        }
        if let Some(path) = s.strip_prefix("znodes:") {
            check_znode_pattern(path)?;
            return Ok(ResourcePattern::Znodes(path.to_string()));
        }
        if let Some(path) = s.strip_prefix("znode:") {
            check_znode_pattern(path)?;
            return Ok(ResourcePattern::Znode(path.to_string()));
        }
        if let Some(glob) = s.strip_prefix("topic:") {
            if glob.is_empty() || glob.contains('/') || glob.contains(char::is_whitespace) {
                return Err(ParseError::new(format!("invalid topic pattern {glob:?}")));
            }
            check_templates(glob)?;
            return Ok(ResourcePattern::Topics(glob.to_string()));
        }
        if let Some(name) = s.strip_prefix("cluster:") {
            if name == "*" {
                return Ok(ResourcePattern::AnyCluster);
            }
            return ClusterResource::from_name(name)
                .map(ResourcePattern::Cluster)
                .ok_or_else(|| {
                    let known: Vec<&str> = ClusterResource::ALL.iter().map(|c| c.name()).collect();
                    ParseError::new(format!(
                        "unknown cluster resource {name:?} ({} or *)",
                        known.join(", ")
                    ))
                });
        }
        Err(ParseError::new(format!(
            "unknown resource {s:?} (*, znodes:/PATH, znode:/PATH, topic:GLOB or cluster:NAME)"
        )))
    }
}

fn check_znode_pattern(path: &str) -> Result<(), ParseError> {
    let bad = |why: &str| {
        Err(ParseError::new(format!(
            "invalid znode pattern {path:?}: {why}"
        )))
    };
    if !path.starts_with('/') {
        return bad("it must start with /");
    }
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        return bad("empty path segment");
    }
    if path.contains(char::is_whitespace) {
        return bad("no whitespace");
    }
    check_templates(path)
}

/// Braces only as `{name}` or `{id}`.
fn check_templates(pattern: &str) -> Result<(), ParseError> {
    let mut rest = pattern;
    while let Some(at) = rest.find(['{', '}']) {
        rest = &rest[at..];
        if let Some(r) = rest
            .strip_prefix("{name}")
            .or_else(|| rest.strip_prefix("{id}"))
        {
            rest = r;
        } else {
            return Err(ParseError::new(format!(
                "invalid pattern {pattern:?}: braces only as {{name}} or {{id}}"
            )));
        }
    }
    Ok(())
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Allow (if no deny rule matches).
    Allow,
    /// Deny, whatever allows.
    Deny,
}

impl Effect {
    /// `allow` or `deny`.
    pub fn name(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// `allow` or `deny`.
impl FromStr for Effect {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Effect, ParseError> {
        match s {
            "allow" => Ok(Effect::Allow),
            "deny" => Ok(Effect::Deny),
            _ => Err(ParseError::new(format!(
                "unknown effect {s:?} (allow or deny)"
            ))),
        }
    }
}

/// One ACL entry: `EFFECT PRINCIPAL RESOURCE ACTIONS` in its one-line form
/// (`deny name:mallory topic:* all`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Allow or deny.
    pub effect: Effect,
    /// Whom.
    pub principal: PrincipalPattern,
    /// What.
    pub resource: ResourcePattern,
    /// Which actions.
    pub actions: Actions,
}

impl Rule {
    /// A rule, checked: at least one action, each one an action on the resource's kind.
    pub fn new(
        effect: Effect,
        principal: PrincipalPattern,
        resource: ResourcePattern,
        actions: Actions,
    ) -> Result<Rule, ParseError> {
        if actions.is_empty() {
            return Err(ParseError::new("a rule needs at least one action".into()));
        }
        if let Some(kind) = resource.kind() {
            if actions != Actions::ALL {
                if let Some(bad) = actions.iter().find(|a| !a.applies_to(kind)) {
                    return Err(ParseError::new(format!(
                        "{} is not an action on {} ({resource})",
                        bad.name(),
                        kind.plural()
                    )));
                }
            }
        }
        Ok(Rule {
            effect,
            principal,
            resource,
            actions,
        })
    }

    /// Whether it applies to `who` doing `action` on `resource`.
    pub fn matches(&self, who: &Identity, resource: &Resource, action: Action) -> bool {
        self.actions.contains(action)
            && self.principal.matches(who)
            && self.resource.matches(resource, who)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.effect.name(),
            self.principal,
            self.resource,
            self.actions
        )
    }
}

impl FromStr for Rule {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Rule, ParseError> {
        let fields: Vec<&str> = s.split_whitespace().collect();
        let [effect, principal, resource, actions] = fields[..] else {
            return Err(ParseError::new(format!(
                "invalid rule {s:?}: want EFFECT PRINCIPAL RESOURCE ACTIONS"
            )));
        };
        Rule::new(
            effect.parse()?,
            principal.parse()?,
            resource.parse()?,
            actions.parse()?,
        )
    }
}

/// A request the policy refuses, with a one-line reason naming who, what and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// `client alice may not write /brokers/ids/1: no rule allows it`.
    pub reason: String,
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl core::error::Error for Denied {}

/// The least-privilege policy of a cluster, by role, one [`Rule`] a line (`#` starts a
/// comment). [`Policy::default_for_cluster`] parses it.
pub const DEFAULT_RULES: &str = "\
# Everyone authenticated may discover resources.
allow any cluster:discovery use
# The zookeeper (its controller and PEHRA coordinator) and admins: everything.
allow role:zookeeper * all
allow role:admin * all
# Brokers: their sessions, replication, PEHRA and the device gateway.
allow role:broker cluster:session use
allow role:broker cluster:replica use
allow role:broker cluster:pehra use
allow role:broker cluster:pehra-wake use
allow role:broker cluster:device use
# ... read the cluster's metadata,
allow role:broker znodes:/brokers read
allow role:broker znodes:/topics read
allow role:broker znodes:/pehra read
allow role:broker znodes:/admin read
allow role:broker znodes:/consumers read
# ... register themselves (and only themselves),
allow role:broker znode:/brokers create
allow role:broker znode:/brokers/ids create
allow role:broker znode:/brokers/ids/{id} create,write,delete
# ... say which of their replicas may not lead yet (restarted behind, or damaged),
allow role:broker znode:/brokers/recovering create
allow role:broker znode:/brokers/recovering/{id}:* create,write,delete
# ... change the ISR of partitions they lead,
allow role:broker znode:/topics/*/partitions/* write
# ... publish their own PEHRA status and maintenance progress, ask the coordinator,
allow role:broker znode:/pehra create
allow role:broker znode:/pehra/nodes create
allow role:broker znode:/pehra/nodes/{name} create,write,delete
allow role:broker znode:/pehra/maintenance create
allow role:broker znode:/pehra/maintenance/{name} write
allow role:broker znode:/pehra/requests create
allow role:broker znode:/pehra/requests/r-* create
# ... ask for their own controlled shutdown,
allow role:broker znode:/admin create
allow role:broker znode:/admin/shutdown create
allow role:broker znode:/admin/shutdown/{id} create,delete
# ... confirm the pre-sync of a warm handover of a partition they lead (the controller
# checks the confirmation against the partition's leader and epoch),
allow role:broker znode:/admin/handover/* write
# ... keep devices' downlink topics and offsets (group dev.NODE) for them,
allow role:broker znode:/consumers create
allow role:broker znodes:/consumers/dev.* create,write
allow role:broker znode:/topics create
allow role:broker znode:/topics/downlink.* create
allow role:broker topic:downlink.* create
# ... serve the pub-sub interface (`/ps`) as its requesters' deputy: the broker first
# checks the requester's own topic create/delete right, then writes the topic's znodes,
allow role:broker znode:/topics/* create,delete
allow role:broker znode:/topics/*/pubsub create,write,delete
allow role:broker znodes:/topics/*/partitions delete
# ... and forward and replicate records.
allow role:broker topic:* produce,consume,describe
# Clients: sessions, every topic, the metadata, consumer group offsets.
allow role:client cluster:session use
allow role:client topic:* produce,consume,describe,create,delete
allow role:client znodes:/brokers read
allow role:client znodes:/topics read
allow role:client znodes:/pehra read
allow role:client znodes:/admin read
allow role:client znodes:/consumers create,read,write,delete
# ... creating and deleting a topic is writing its znodes (until the controller does it).
allow role:client znode:/topics create
allow role:client znode:/topics/* create
allow role:client znodes:/topics/* delete
# Devices: the gateway and check-ins, their readings and their own downlink.
allow role:device cluster:device use
allow role:device cluster:pehra use
allow role:device topic:readings produce
allow role:device topic:downlink.{name} consume
";

/// An ordered list of rules; see the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Policy {
    /// No rules: everything is denied.
    pub fn new() -> Policy {
        Policy::default()
    }

    /// These rules.
    pub fn from_rules(rules: Vec<Rule>) -> Policy {
        Policy { rules }
    }

    /// Rules one a line ([`Rule`]'s form), blank lines and `#` comments skipped; an
    /// error names the line.
    pub fn parse(text: &str) -> Result<Policy, ParseError> {
        let mut rules = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            rules.push(
                line.parse()
                    .map_err(|e| ParseError::new(format!("line {}: {e}", i + 1)))?,
            );
        }
        Ok(Policy { rules })
    }

    /// The least-privilege policy by role, [`DEFAULT_RULES`]:
    ///
    /// - zookeeper and admin: everything;
    /// - broker: its sessions, replication, PEHRA, the device gateway; read everything
    ///   under `/brokers`, `/topics`, `/pehra`, `/admin`, `/consumers`; create, write and
    ///   delete only its own `/brokers/ids/{id}`, `/pehra/nodes/broker-N`,
    ///   `/admin/shutdown/{id}`; write partition state, its own maintenance order, PEHRA
    ///   requests; devices' downlink topics and offsets; produce, consume, describe any
    ///   topic;
    /// - client: sessions; produce, consume, describe, create, delete any topic; read
    ///   the metadata; consumer group offsets under `/consumers`;
    /// - device: the gateway and check-ins; produce to `readings`, consume
    ///   `downlink.{its name}`;
    /// - every authenticated identity: `/.well-known/core`.
    pub fn default_for_cluster() -> Policy {
        Policy::parse(DEFAULT_RULES).expect("the default rules parse")
    }

    /// Adds a rule at the end.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Adds rules at the end.
    pub fn extend(&mut self, rules: impl IntoIterator<Item = Rule>) {
        self.rules.extend(rules);
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `who` may do `action` on `resource`: some allow rule matches and no deny
    /// rule does.
    pub fn check(&self, who: &Identity, resource: &Resource, action: Action) -> Result<(), Denied> {
        let denied = |why: String| Denied {
            reason: format!(
                "{} {} may not {} {resource}: {why}",
                who.role.name(),
                who.name,
                action.name()
            ),
        };
        if !action.applies_to(resource.kind()) {
            return Err(denied(format!(
                "{} is not an action on {}",
                action.name(),
                resource.kind().plural()
            )));
        }
        let mut allowed = false;
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.matches(who, resource, action) {
                continue;
            }
            match rule.effect {
                Effect::Deny => return Err(denied(format!("denied by rule {} ({rule})", i + 1))),
                Effect::Allow => allowed = true,
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(denied("no rule allows it".to_string()))
        }
    }
}

/// The number after the last `-` of a name (`broker-2` → `2`).
fn name_id(name: &str) -> Option<&str> {
    let (_, id) = name.rsplit_once('-')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then_some(id)
}

enum Token<'a> {
    Literal(&'a str),
    Star,
}

/// `pattern`'s tokens, `{name}` and `{id}` replaced by `who`'s (literally: a name's
/// characters are never wildcards); `None` if it needs an `{id}` the name lacks.
fn tokens<'a>(pattern: &'a str, who: Option<&'a Identity>) -> Option<Vec<Token<'a>>> {
    let mut tokens = Vec::new();
    let mut rest = pattern;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('*') {
            if !matches!(tokens.last(), Some(Token::Star)) {
                tokens.push(Token::Star);
            }
            rest = r;
        } else if let (Some(r), Some(who)) = (rest.strip_prefix("{name}"), who) {
            tokens.push(Token::Literal(&who.name));
            rest = r;
        } else if let (Some(r), Some(who)) = (rest.strip_prefix("{id}"), who) {
            tokens.push(Token::Literal(name_id(&who.name)?));
            rest = r;
        } else {
            let first = rest.chars().next().map_or(1, char::len_utf8);
            let end = rest[first..]
                .find(['*', '{'])
                .map_or(rest.len(), |at| at + first);
            tokens.push(Token::Literal(&rest[..end]));
            rest = &rest[end..];
        }
    }
    Some(tokens)
}

fn tokens_match(tokens: &[Token<'_>], text: &str) -> bool {
    match tokens.split_first() {
        None => text.is_empty(),
        Some((Token::Literal(literal), rest)) => text
            .strip_prefix(literal)
            .is_some_and(|text| tokens_match(rest, text)),
        Some((Token::Star, rest)) => (0..=text.len())
            .filter(|&at| text.is_char_boundary(at))
            .any(|at| tokens_match(rest, &text[at..])),
    }
}

/// Whether `text` matches the glob `pattern` (`*` any run of characters).
fn glob_match(pattern: &str, text: &str, who: Option<&Identity>) -> bool {
    tokens(pattern, who).is_some_and(|tokens| tokens_match(&tokens, text))
}

/// Whether znode `path` is the one `pattern` names (`subtree`: or below it), segment
/// by segment, each pattern segment a glob.
fn znode_match(pattern: &str, path: &str, who: &Identity, subtree: bool) -> bool {
    fn segments(path: &str) -> Option<impl Iterator<Item = &str>> {
        let rest = path.strip_prefix('/')?;
        Some(rest.split('/').filter(move |_| !rest.is_empty()))
    }
    let (Some(mut pattern), Some(mut path)) = (segments(pattern), segments(path)) else {
        return false;
    };
    loop {
        match (pattern.next(), path.next()) {
            (None, None) => return true,
            (None, Some(_)) => return subtree,
            (Some(_), None) => return false,
            (Some(p), Some(s)) => {
                if !glob_match(p, s, Some(who)) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::kid;

    fn id(role: Role, name: &str, number: u32) -> Identity {
        Identity {
            name: name.into(),
            role,
            kid: kid(role, number),
        }
    }

    fn znode(path: &str) -> Resource {
        Resource::Znode(path.into())
    }

    fn topic(name: &str) -> Resource {
        Resource::Topic(name.into())
    }

    fn cluster(c: ClusterResource) -> Resource {
        Resource::Cluster(c)
    }

    #[track_caller]
    fn allowed(policy: &Policy, who: &Identity, resource: Resource, actions: &[Action]) {
        for &action in actions {
            if let Err(e) = policy.check(who, &resource, action) {
                panic!("expected allowed: {e}");
            }
        }
    }

    #[track_caller]
    fn denied(policy: &Policy, who: &Identity, resource: Resource, actions: &[Action]) {
        for &action in actions {
            assert!(
                policy.check(who, &resource, action).is_err(),
                "expected denied: {} {} {} {resource}",
                who.role.name(),
                who.name,
                action.name()
            );
        }
    }

    use Action::*;
    use ClusterResource as C;

    #[test]
    fn the_default_rules_parse_and_print_back() {
        let policy = Policy::default_for_cluster();
        assert!(policy.rules().len() > 30);
        for rule in policy.rules() {
            assert_eq!(rule.to_string().parse::<Rule>().unwrap(), *rule);
        }
    }

    #[test]
    fn zookeeper_and_admin_may_do_everything() {
        let policy = Policy::default_for_cluster();
        for who in [
            id(Role::Zookeeper, "zookeeper", 0),
            id(Role::Admin, "admin", 1),
        ] {
            allowed(
                &policy,
                &who,
                znode("/"),
                &[Create, Read, Write, Delete, Admin],
            );
            allowed(&policy, &who, znode("/pehra/admin"), &[Write]);
            allowed(&policy, &who, znode("/brokers/ids/7"), &[Delete]);
            allowed(
                &policy,
                &who,
                topic("anything"),
                &[Produce, Consume, Create, Delete, Describe],
            );
            for c in ClusterResource::ALL {
                allowed(&policy, &who, cluster(c), &[Use]);
            }
        }
    }

    #[test]
    fn brokers_register_only_themselves() {
        let policy = Policy::default_for_cluster();
        let b2 = id(Role::Broker, "broker-2", 2);
        allowed(
            &policy,
            &b2,
            znode("/brokers/ids/2"),
            &[Create, Write, Delete, Read],
        );
        allowed(&policy, &b2, znode("/brokers"), &[Create, Read]);
        allowed(&policy, &b2, znode("/brokers/ids"), &[Create, Read]);
        denied(
            &policy,
            &b2,
            znode("/brokers/ids/1"),
            &[Create, Write, Delete],
        );
        denied(&policy, &b2, znode("/brokers/ids/22"), &[Create]);
        denied(&policy, &b2, znode("/brokers/ids/2/x"), &[Create]);
        denied(&policy, &b2, znode("/brokers"), &[Write, Delete]);
        // {id} needs a number at the end of the name
        let odd = id(Role::Broker, "broker", 2);
        denied(&policy, &odd, znode("/brokers/ids/2"), &[Create]);
    }

    #[test]
    fn brokers_report_only_their_own_replicas_as_recovering() {
        let policy = Policy::default_for_cluster();
        let b1 = id(Role::Broker, "broker-1", 1);
        allowed(&policy, &b1, znode("/brokers/recovering"), &[Create, Read]);
        for own in ["/brokers/recovering/1:*", "/brokers/recovering/1:t:0"] {
            allowed(&policy, &b1, znode(own), &[Create, Write, Delete]);
        }
        for other in [
            "/brokers/recovering/2:t:0",
            "/brokers/recovering/12:t:0",
            "/brokers/recovering/1",
        ] {
            denied(&policy, &b1, znode(other), &[Create, Write, Delete]);
        }
        denied(&policy, &b1, znode("/brokers/recovering"), &[Write, Delete]);
    }

    #[test]
    fn brokers_read_metadata_and_write_only_their_state() {
        let policy = Policy::default_for_cluster();
        let b1 = id(Role::Broker, "broker-1", 1);
        for path in [
            "/brokers/ids/3",
            "/topics/t/partitions/0",
            "/pehra/state",
            "/admin/shutdown",
            "/consumers/g/t/0",
        ] {
            allowed(&policy, &b1, znode(path), &[Read]);
        }
        denied(&policy, &b1, znode("/"), &[Read, Create]);
        denied(&policy, &b1, znode("/zookeeper"), &[Read]);
        allowed(&policy, &b1, znode("/topics/t/partitions/3"), &[Write]);
        denied(&policy, &b1, znode("/topics/t/partitions/3"), &[Create]);
        // (deleting a topic through the pub-sub interface deletes its partitions)
        allowed(&policy, &b1, znode("/topics/t/partitions/3"), &[Delete]);
        // A broker creates and deletes topics for the pub-sub interface (after checking
        // its requester's topic right), but never rewrites a topic's configuration.
        denied(&policy, &b1, znode("/topics/t"), &[Write]);
        allowed(&policy, &b1, znode("/topics/t"), &[Create, Delete]);
        allowed(
            &policy,
            &b1,
            znode("/topics/t/pubsub"),
            &[Create, Write, Delete],
        );
        denied(&policy, &b1, znode("/topics/t/partitions"), &[Write]);
        allowed(
            &policy,
            &b1,
            znode("/pehra/nodes/broker-1"),
            &[Create, Write, Delete],
        );
        denied(
            &policy,
            &b1,
            znode("/pehra/nodes/broker-2"),
            &[Create, Write, Delete],
        );
        denied(&policy, &b1, znode("/pehra/nodes/broker-1x"), &[Create]);
        allowed(&policy, &b1, znode("/pehra/maintenance/broker-1"), &[Write]);
        denied(&policy, &b1, znode("/pehra/maintenance/broker-2"), &[Write]);
        denied(
            &policy,
            &b1,
            znode("/pehra/maintenance/broker-1"),
            &[Create, Delete],
        );
        allowed(&policy, &b1, znode("/pehra/requests/r-"), &[Create]);
        allowed(
            &policy,
            &b1,
            znode("/pehra/requests/r-0000000007"),
            &[Create],
        );
        denied(
            &policy,
            &b1,
            znode("/pehra/requests/r-0000000007"),
            &[Write, Delete],
        );
        denied(
            &policy,
            &b1,
            znode("/pehra/state"),
            &[Write, Create, Delete],
        );
        denied(&policy, &b1, znode("/pehra/admin"), &[Write, Create]);
        denied(&policy, &b1, znode("/pehra/terms/1"), &[Create, Write]);
        allowed(&policy, &b1, znode("/admin/shutdown/1"), &[Create, Delete]);
        denied(&policy, &b1, znode("/admin/shutdown/2"), &[Create, Delete]);
        denied(&policy, &b1, znode("/admin/absent/1"), &[Create, Write]);
        // A warm handover: brokers confirm a pre-sync, only the admin orders one.
        allowed(&policy, &b1, znode("/admin/handover/t:0"), &[Write]);
        denied(
            &policy,
            &b1,
            znode("/admin/handover/t:0"),
            &[Create, Delete],
        );
        allowed(
            &policy,
            &b1,
            znode("/consumers/dev.s1/downlink.s1/0"),
            &[Create, Write],
        );
        denied(&policy, &b1, znode("/consumers/app/t/0"), &[Write, Create]);
        allowed(&policy, &b1, znode("/topics/downlink.s1"), &[Create]);
        // ... and any topic for the pub-sub interface (its requester's right checked first).
        allowed(&policy, &b1, znode("/topics/orders"), &[Create]);
    }

    #[test]
    fn brokers_replicate_forward_and_serve_devices() {
        let policy = Policy::default_for_cluster();
        let b1 = id(Role::Broker, "broker-1", 1);
        for c in [
            C::Session,
            C::Replica,
            C::Pehra,
            C::PehraWake,
            C::Device,
            C::Discovery,
        ] {
            allowed(&policy, &b1, cluster(c), &[Use]);
        }
        denied(&policy, &b1, cluster(C::Admin), &[Use]);
        denied(&policy, &b1, cluster(C::PehraMode), &[Use]);
        allowed(&policy, &b1, topic("orders"), &[Produce, Consume, Describe]);
        denied(&policy, &b1, topic("orders"), &[Create, Delete]);
        allowed(&policy, &b1, topic("downlink.s1"), &[Create]);
    }

    #[test]
    fn clients_use_topics_and_offsets_not_the_cluster() {
        let policy = Policy::default_for_cluster();
        let alice = id(Role::Client, "alice", 1);
        allowed(&policy, &alice, cluster(C::Session), &[Use]);
        allowed(&policy, &alice, cluster(C::Discovery), &[Use]);
        for c in [
            C::Replica,
            C::Admin,
            C::Pehra,
            C::PehraWake,
            C::PehraMode,
            C::Device,
        ] {
            denied(&policy, &alice, cluster(c), &[Use]);
        }
        allowed(
            &policy,
            &alice,
            topic("orders"),
            &[Produce, Consume, Describe, Create, Delete],
        );
        allowed(&policy, &alice, znode("/brokers/ids/1"), &[Read]);
        allowed(
            &policy,
            &alice,
            znode("/topics/orders/partitions/0"),
            &[Read],
        );
        allowed(&policy, &alice, znode("/pehra/state"), &[Read]);
        allowed(&policy, &alice, znode("/admin/shutdown"), &[Read]);
        denied(
            &policy,
            &alice,
            znode("/brokers/ids/1"),
            &[Create, Write, Delete],
        );
        denied(
            &policy,
            &alice,
            znode("/pehra/admin"),
            &[Write, Create, Delete],
        );
        denied(&policy, &alice, znode("/pehra/requests/r-"), &[Create]);
        // Only the admin asks for a warm handover.
        denied(
            &policy,
            &alice,
            znode("/admin/handover/orders:0"),
            &[Create, Write, Delete],
        );
        denied(
            &policy,
            &alice,
            znode("/admin/shutdown/1"),
            &[Create, Delete],
        );
        allowed(
            &policy,
            &alice,
            znode("/consumers/g/orders/0"),
            &[Create, Read, Write, Delete],
        );
        allowed(&policy, &alice, znode("/consumers"), &[Create]);
        // topic creation and deletion write the topic's znodes
        allowed(&policy, &alice, znode("/topics/orders"), &[Create, Delete]);
        allowed(
            &policy,
            &alice,
            znode("/topics/orders/partitions/0"),
            &[Delete],
        );
        denied(
            &policy,
            &alice,
            znode("/topics/orders/partitions/0"),
            &[Write, Create],
        );
        denied(&policy, &alice, znode("/topics/orders"), &[Write]);
        denied(&policy, &alice, znode("/topics"), &[Delete, Write]);
        let denial = policy
            .check(&alice, &znode("/brokers/ids/1"), Write)
            .unwrap_err();
        assert_eq!(
            denial.to_string(),
            "client alice may not write /brokers/ids/1: no rule allows it"
        );
    }

    #[test]
    fn devices_produce_readings_and_read_their_own_downlink() {
        let policy = Policy::default_for_cluster();
        let s1 = id(Role::Device, "sensor-1", 1);
        allowed(&policy, &s1, cluster(C::Device), &[Use]);
        allowed(&policy, &s1, cluster(C::Pehra), &[Use]);
        // Checking in, yes; waking every broker (keeping them from sleeping), no.
        for c in [C::Replica, C::Admin, C::Session, C::PehraMode, C::PehraWake] {
            denied(&policy, &s1, cluster(c), &[Use]);
        }
        allowed(&policy, &s1, topic("readings"), &[Produce]);
        denied(&policy, &s1, topic("readings"), &[Consume, Delete, Create]);
        denied(&policy, &s1, topic("readings2"), &[Produce]);
        allowed(&policy, &s1, topic("downlink.sensor-1"), &[Consume]);
        denied(&policy, &s1, topic("downlink.sensor-1"), &[Produce]);
        denied(&policy, &s1, topic("downlink.sensor-2"), &[Consume]);
        denied(&policy, &s1, topic("downlink.sensor-1x"), &[Consume]);
        denied(&policy, &s1, znode("/brokers"), &[Read]);
        denied(&policy, &s1, znode("/consumers/dev.sensor-1"), &[Write]);
    }

    #[test]
    fn a_name_is_matched_literally_not_as_a_pattern() {
        let policy = Policy::default_for_cluster();
        let sly = id(Role::Device, "*", 9);
        denied(&policy, &sly, topic("downlink.sensor-1"), &[Consume]);
        allowed(&policy, &sly, topic("downlink.*"), &[Consume]);
    }

    #[test]
    fn deny_wins_wherever_it_stands() {
        let mut policy = Policy::default_for_cluster();
        let mallory = id(Role::Client, "mallory", 6);
        let alice = id(Role::Client, "alice", 1);
        allowed(&policy, &mallory, topic("orders"), &[Produce]);
        policy.push("deny name:mall* topic:ord* produce,delete".parse().unwrap());
        let denial = policy
            .check(&mallory, &topic("orders"), Produce)
            .unwrap_err();
        assert!(denial
            .reason
            .starts_with("client mallory may not produce topic orders: denied by rule"));
        assert!(denial
            .reason
            .contains("deny name:mall* topic:ord* delete,produce"));
        allowed(&policy, &mallory, topic("orders"), &[Consume]);
        allowed(&policy, &mallory, topic("other"), &[Produce]);
        allowed(&policy, &alice, topic("orders"), &[Produce]);
        // a deny before the allows wins as well
        let mut rules = policy.rules().to_vec();
        rules.rotate_right(1);
        let policy = Policy::from_rules(rules);
        denied(&policy, &mallory, topic("orders"), &[Produce]);
        // and a deny of the admin role overrides `all`
        let mut policy = Policy::default_for_cluster();
        policy.push("deny role:admin cluster:pehra-mode use".parse().unwrap());
        denied(
            &policy,
            &id(Role::Admin, "admin", 1),
            cluster(C::PehraMode),
            &[Use],
        );
        allowed(
            &policy,
            &id(Role::Admin, "admin", 1),
            cluster(C::Pehra),
            &[Use],
        );
    }

    #[test]
    fn no_rule_means_deny() {
        let policy = Policy::new();
        let root = id(Role::Admin, "root", 1);
        denied(&policy, &root, znode("/"), &[Read]);
        denied(&policy, &root, cluster(C::Discovery), &[Use]);
    }

    #[test]
    fn an_action_of_another_kind_is_denied_with_a_reason() {
        let policy = Policy::default_for_cluster();
        let admin = id(Role::Admin, "admin", 1);
        let e = policy.check(&admin, &znode("/a"), Produce).unwrap_err();
        assert_eq!(
            e.reason,
            "admin admin may not produce /a: produce is not an action on znodes"
        );
        assert!(policy.check(&admin, &topic("t"), Use).is_err());
        assert!(policy.check(&admin, &cluster(C::Replica), Read).is_err());
    }

    #[test]
    fn globs() {
        let who = id(Role::Client, "alice", 1);
        let g = |p: &str, t: &str| glob_match(p, t, Some(&who));
        assert!(g("*", ""));
        assert!(g("*", "anything"));
        assert!(g("orders", "orders"));
        assert!(!g("orders", "orders2"));
        assert!(!g("orders", "order"));
        assert!(g("ord*", "orders"));
        assert!(g("ord*", "ord"));
        assert!(g("*ers", "orders"));
        assert!(!g("*ers", "orderss"));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(g("a*b*c", "abc"));
        assert!(!g("a*b*c", "acb"));
        assert!(g("a**c", "abc"));
        assert!(g("team.{name}.*", "team.alice.x"));
        assert!(!g("team.{name}.*", "team.bob.x"));
        assert!(g("é*", "été"));
        let b = id(Role::Broker, "broker-12", 12);
        assert!(glob_match("/x/{id}", "/x/12", Some(&b)));
        assert!(!glob_match("/x/{id}", "/x/1", Some(&b)));
        // principal name globs
        let p: PrincipalPattern = "name:sensor-*".parse().unwrap();
        assert!(p.matches(&id(Role::Device, "sensor-17", 17)));
        assert!(!p.matches(&id(Role::Device, "sensor", 17)));
        assert!(!p.matches(&id(Role::Device, "xsensor-1", 1)));
        assert!(PrincipalPattern::Any.matches(&who));
        assert!(PrincipalPattern::Role(Role::Client).matches(&who));
        assert!(!PrincipalPattern::Role(Role::Device).matches(&who));
    }

    #[test]
    fn znode_prefixes_are_segment_wise() {
        let who = id(Role::Client, "alice", 1);
        let sub = |p: &str, t: &str| znode_match(p, t, &who, true);
        let exact = |p: &str, t: &str| znode_match(p, t, &who, false);
        assert!(sub("/brokers", "/brokers"));
        assert!(sub("/brokers", "/brokers/ids"));
        assert!(sub("/brokers", "/brokers/ids/1"));
        assert!(!sub("/brokers", "/brokersX"));
        assert!(!sub("/brokers", "/brokersX/ids"));
        assert!(!sub("/brokers", "/"));
        assert!(!sub("/brokers", "/broker"));
        assert!(!sub("/brokers", "brokers"));
        assert!(sub("/", "/"));
        assert!(sub("/", "/anything/at/all"));
        assert!(exact("/", "/"));
        assert!(!exact("/", "/a"));
        assert!(exact("/brokers", "/brokers"));
        assert!(!exact("/brokers", "/brokers/ids"));
        assert!(exact("/topics/*/partitions/*", "/topics/t/partitions/0"));
        assert!(!exact("/topics/*/partitions/*", "/topics/a/b/partitions/0"));
        assert!(!exact("/topics/*/partitions/*", "/topics/t/partitions"));
        assert!(!exact("/topics/*/partitions/*", "/topics/t/partitions/0/x"));
        assert!(sub("/consumers/dev.*", "/consumers/dev.s1/t/0"));
        assert!(!sub("/consumers/dev.*", "/consumers/devs/t/0"));
        assert!(exact("/home/{name}", "/home/alice"));
        assert!(!exact("/home/{name}", "/home/bob"));
        // an operator's prefix rule
        let mut policy = Policy::new();
        policy.push("allow name:alice znodes:/apps/alice all".parse().unwrap());
        allowed(&policy, &who, znode("/apps/alice/x"), &[Create, Write]);
        denied(&policy, &who, znode("/apps/alice2"), &[Create]);
        denied(&policy, &who, znode("/apps"), &[Read]);
    }

    #[test]
    fn bad_rules_say_why() {
        let err = |s: &str| s.parse::<Rule>().unwrap_err().to_string();
        assert!(err("allow role:client topic:*").contains("want EFFECT PRINCIPAL RESOURCE ACTIONS"));
        assert!(err("permit role:client topic:* produce").contains("unknown effect"));
        assert!(err("allow role:root topic:* produce").contains("unknown role"));
        assert!(err("allow alice topic:* produce").contains("unknown principal"));
        assert!(err("allow any topic:* read").contains("read is not an action on topics"));
        assert!(err("allow any znodes:/a produce").contains("produce is not an action on znodes"));
        assert!(err("allow any cluster:replica read").contains("not an action on cluster"));
        assert!(err("allow any cluster:nope use").contains("unknown cluster resource"));
        assert!(err("allow any znodes:brokers read").contains("must start with /"));
        assert!(err("allow any znodes:/a//b read").contains("empty path segment"));
        assert!(err("allow any znodes:/a/ read").contains("empty path segment"));
        assert!(err("allow any znode:/a/{who} read").contains("braces only"));
        assert!(err("allow any topic:x produce,fly").contains("unknown action"));
        assert!(err("allow any table:x read").contains("unknown resource"));
        let e = Policy::parse("# ok\nallow any * all\n\nallow any topic:* read\n").unwrap_err();
        assert!(e.to_string().starts_with("line 4: "), "{e}");
        let p = Policy::parse("allow any * all # comment\n").unwrap();
        assert_eq!(p.rules().len(), 1);
        assert_eq!(p.rules()[0].actions, Actions::ALL);
    }

    #[test]
    fn uri_paths_name_cluster_resources() {
        assert_eq!(ClusterResource::of_uri_path("replica"), Some(C::Replica));
        assert_eq!(
            ClusterResource::of_uri_path("session/12/hb"),
            Some(C::Session)
        );
        assert_eq!(
            ClusterResource::of_uri_path("pehra/mode"),
            Some(C::PehraMode)
        );
        assert_eq!(
            ClusterResource::of_uri_path("/pehra/checkin"),
            Some(C::Pehra)
        );
        assert_eq!(
            ClusterResource::of_uri_path("pehra/wake"),
            Some(C::PehraWake)
        );
        assert_eq!(
            ClusterResource::of_uri_path("dev/s1/readings"),
            Some(C::Device)
        );
        assert_eq!(
            ClusterResource::of_uri_path("admin/shutdown"),
            Some(C::Admin)
        );
        assert_eq!(
            ClusterResource::of_uri_path(".well-known/core"),
            Some(C::Discovery)
        );
        assert_eq!(ClusterResource::of_uri_path("z/brokers"), None);
        assert_eq!(ClusterResource::of_uri_path("ps/data/t"), None);
        for c in ClusterResource::ALL {
            assert_eq!(ClusterResource::from_name(c.name()), Some(c));
        }
        for a in Action::ALL {
            assert_eq!(Action::from_name(a.name()), Some(a));
        }
        assert_eq!(
            "produce,consume".parse::<Actions>().unwrap(),
            Actions::of(&[Produce, Consume])
        );
    }
}
