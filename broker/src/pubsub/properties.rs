//! Topic properties (draft-ietf-core-coap-pubsub-21 §2.2.1, §4): the CBOR map of a
//! topic resource, its integer keys (the draft's registry; the text names are accepted
//! too), type checks, and what POST, iPATCH, FETCH and a collection filter do with it.
//! Pure: no I/O.

use ciborium::Value;
use thiserror::Error;

/// The default `resource-type` of a topic-data resource.
pub const RT_DATA: &str = "core.ps.data";

/// A topic property: its CBOR key (the draft's registry, §4 and §6.4), its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `topic-name` (0): text, required, immutable.
    TopicName,
    /// `topic-data` (1): text, the URI of the topic-data resource; immutable.
    TopicData,
    /// `resource-type` (2): text, the topic-data resource's type; immutable.
    ResourceType,
    /// `topic-content-format` (3): uint, the Content-Format publications must have.
    TopicContentFormat,
    /// `topic-type` (4): text.
    TopicType,
    /// `expiration-date` (5): tag 1 (epoch seconds); the topic is deleted then.
    ExpirationDate,
    /// `max-subscribers` (6): uint, a hint this broker does not store (the draft
    /// allows "none at all").
    MaxSubscribers,
    /// `observer-check` (7): uint > 0, seconds between confirmable notifications.
    ObserverCheck,
    /// `initialize` (8): bytes, the first representation of the topic-data resource.
    Initialize,
    /// Extension (private-use key -65537): the topic's number of partitions; immutable.
    Partitions,
    /// Extension (private-use key -65538): copies of each partition; immutable.
    ReplicationFactor,
}

impl Key {
    /// Every key, in the order of their CBOR keys (extensions last).
    pub const ALL: [Key; 11] = [
        Key::TopicName,
        Key::TopicData,
        Key::ResourceType,
        Key::TopicContentFormat,
        Key::TopicType,
        Key::ExpirationDate,
        Key::MaxSubscribers,
        Key::ObserverCheck,
        Key::Initialize,
        Key::Partitions,
        Key::ReplicationFactor,
    ];

    /// The CBOR key.
    pub const fn code(self) -> i64 {
        match self {
            Key::TopicName => 0,
            Key::TopicData => 1,
            Key::ResourceType => 2,
            Key::TopicContentFormat => 3,
            Key::TopicType => 4,
            Key::ExpirationDate => 5,
            Key::MaxSubscribers => 6,
            Key::ObserverCheck => 7,
            Key::Initialize => 8,
            Key::Partitions => -65537,
            Key::ReplicationFactor => -65538,
        }
    }

    /// The descriptive name.
    pub const fn name(self) -> &'static str {
        match self {
            Key::TopicName => "topic-name",
            Key::TopicData => "topic-data",
            Key::ResourceType => "resource-type",
            Key::TopicContentFormat => "topic-content-format",
            Key::TopicType => "topic-type",
            Key::ExpirationDate => "expiration-date",
            Key::MaxSubscribers => "max-subscribers",
            Key::ObserverCheck => "observer-check",
            Key::Initialize => "initialize",
            Key::Partitions => "partitions",
            Key::ReplicationFactor => "replication-factor",
        }
    }

    /// Whether a configuration update may not change it.
    pub const fn immutable(self) -> bool {
        matches!(
            self,
            Key::TopicName
                | Key::TopicData
                | Key::ResourceType
                | Key::Partitions
                | Key::ReplicationFactor
        )
    }

    /// The key a CBOR map key stands for: its integer, or its name as text.
    pub fn of(key: &Value) -> Result<Key, PropertyError> {
        let found = match key {
            Value::Integer(i) => {
                let code = i64::try_from(i128::from(*i)).ok();
                Key::ALL.into_iter().find(|k| Some(k.code()) == code)
            }
            Value::Text(t) => Key::ALL.into_iter().find(|k| k.name() == t),
            _ => None,
        };
        found.ok_or_else(|| PropertyError::Unknown(describe(key)))
    }
}

/// Why a topic representation, filter or update is refused (4.00 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PropertyError {
    /// Not a CBOR map (or array, for a FETCH of a topic).
    #[error("the body must be a CBOR {0}")]
    Shape(&'static str),
    /// A key the registry does not have.
    #[error("unrecognized topic property {0}")]
    Unknown(String),
    /// A key given twice.
    #[error("topic property {0} given twice")]
    Repeated(&'static str),
    /// A value of the wrong type or range.
    #[error("topic property {0} must be {1}")]
    Type(&'static str, &'static str),
    /// A required property is missing.
    #[error("topic property {0} is required")]
    Missing(&'static str),
    /// An update changes a property that cannot change after creation.
    #[error("topic property {0} cannot change after the topic is created")]
    Immutable(&'static str),
    /// A value this broker cannot honour.
    #[error("{0}")]
    Unsupported(String),
}

/// Topic properties; in a representation every required one is set, in a request or a
/// filter only those given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// `topic-name`.
    pub topic_name: Option<String>,
    /// `topic-data`.
    pub topic_data: Option<String>,
    /// `resource-type`.
    pub resource_type: Option<String>,
    /// `topic-content-format`.
    pub topic_content_format: Option<u16>,
    /// `topic-type`.
    pub topic_type: Option<String>,
    /// `expiration-date`, seconds since the Unix epoch.
    pub expiration_date: Option<u64>,
    /// `max-subscribers` (read from requests, never stored).
    pub max_subscribers: Option<u64>,
    /// `observer-check`, seconds.
    pub observer_check: Option<u32>,
    /// `initialize`.
    pub initialize: Option<Vec<u8>>,
    /// Extension: partitions.
    pub partitions: Option<u32>,
    /// Extension: replication factor.
    pub replication_factor: Option<u32>,
}

impl Properties {
    /// Decodes a CBOR map of topic properties (integer or text keys), checking each
    /// value's type; unknown keys are refused.
    pub fn decode(bytes: &[u8]) -> Result<Properties, PropertyError> {
        let value: Value = ciborium::from_reader(bytes).map_err(|_| PropertyError::Shape("map"))?;
        let Value::Map(entries) = value else {
            return Err(PropertyError::Shape("map"));
        };
        let mut props = Properties::default();
        let mut seen = Vec::new();
        for (k, v) in entries {
            let key = Key::of(&k)?;
            if seen.contains(&key) {
                return Err(PropertyError::Repeated(key.name()));
            }
            seen.push(key);
            props.set(key, v)?;
        }
        Ok(props)
    }

    fn set(&mut self, key: Key, v: Value) -> Result<(), PropertyError> {
        let name = key.name();
        let text = |v: Value| v.into_text().map_err(|_| PropertyError::Type(name, "text"));
        let uint = |v: &Value| {
            v.as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or(PropertyError::Type(name, "an unsigned integer"))
        };
        let small = |v: &Value, max: u64| {
            uint(v).and_then(|n| {
                (n <= max)
                    .then_some(n)
                    .ok_or(PropertyError::Type(name, "a smaller unsigned integer"))
            })
        };
        match key {
            Key::TopicName => self.topic_name = Some(text(v)?),
            Key::TopicData => self.topic_data = Some(text(v)?),
            Key::ResourceType => self.resource_type = Some(text(v)?),
            Key::TopicContentFormat => {
                self.topic_content_format = Some(small(&v, u64::from(u16::MAX))? as u16)
            }
            Key::TopicType => self.topic_type = Some(text(v)?),
            Key::ExpirationDate => {
                let seconds = match v {
                    Value::Tag(1, inner) => match *inner {
                        Value::Integer(i) => u64::try_from(i).ok(),
                        Value::Float(f) if f >= 0.0 && f.is_finite() => Some(f as u64),
                        _ => None,
                    },
                    _ => None,
                };
                self.expiration_date = Some(seconds.ok_or(PropertyError::Type(
                    name,
                    "an epoch date (tag 1) not before 1970",
                ))?)
            }
            Key::MaxSubscribers => self.max_subscribers = Some(uint(&v)?),
            Key::ObserverCheck => {
                let n = small(&v, u64::from(u32::MAX))?;
                if n == 0 {
                    return Err(PropertyError::Type(name, "greater than 0"));
                }
                self.observer_check = Some(n as u32)
            }
            Key::Initialize => {
                self.initialize = Some(
                    v.into_bytes()
                        .map_err(|_| PropertyError::Type(name, "a byte string"))?,
                )
            }
            Key::Partitions => self.partitions = Some(small(&v, u64::from(u32::MAX))? as u32),
            Key::ReplicationFactor => {
                self.replication_factor = Some(small(&v, u64::from(u32::MAX))? as u32)
            }
        }
        Ok(())
    }

    /// The value of one property, as CBOR, if it is set.
    pub fn get(&self, key: Key) -> Option<Value> {
        let text = |s: &Option<String>| s.clone().map(Value::Text);
        let uint = |n: Option<u64>| n.map(|n| Value::Integer(n.into()));
        match key {
            Key::TopicName => text(&self.topic_name),
            Key::TopicData => text(&self.topic_data),
            Key::ResourceType => text(&self.resource_type),
            Key::TopicContentFormat => uint(self.topic_content_format.map(u64::from)),
            Key::TopicType => text(&self.topic_type),
            Key::ExpirationDate => self
                .expiration_date
                .map(|s| Value::Tag(1, Box::new(Value::Integer(s.into())))),
            Key::MaxSubscribers => uint(self.max_subscribers),
            Key::ObserverCheck => uint(self.observer_check.map(u64::from)),
            Key::Initialize => self.initialize.clone().map(Value::Bytes),
            Key::Partitions => uint(self.partitions.map(u64::from)),
            Key::ReplicationFactor => uint(self.replication_factor.map(u64::from)),
        }
    }

    /// The properties that are set, as a CBOR map with integer keys (in key order).
    pub fn to_value(&self, keys: &[Key]) -> Value {
        Value::Map(
            keys.iter()
                .filter_map(|k| Some((Value::Integer(k.code().into()), self.get(*k)?)))
                .collect(),
        )
    }

    /// [`Self::to_value`] of every property, encoded.
    pub fn encode(&self) -> Vec<u8> {
        encode(&self.to_value(&Key::ALL))
    }

    /// The properties that can change after creation (what the broker keeps for a topic
    /// besides its name, partitions and replication factor), and `resource-type`.
    pub fn stored(&self) -> Properties {
        Properties {
            resource_type: self.resource_type.clone(),
            topic_content_format: self.topic_content_format,
            topic_type: self.topic_type.clone(),
            expiration_date: self.expiration_date,
            observer_check: self.observer_check,
            initialize: self.initialize.clone(),
            ..Properties::default()
        }
    }

    /// Whether this filter (FETCH on the collection) matches `topic`: every property
    /// the filter gives is present in the topic with the same value.
    pub fn matches(&self, topic: &Properties) -> bool {
        Key::ALL.into_iter().all(|k| match self.get(k) {
            None => true,
            Some(wanted) => topic.get(k) == Some(wanted),
        })
    }

    /// Checks that an update of `current` does not change an immutable property (it may
    /// repeat its current value).
    pub fn check_immutables(&self, current: &Properties) -> Result<(), PropertyError> {
        for key in Key::ALL.into_iter().filter(|k| k.immutable()) {
            if let Some(given) = self.get(key) {
                let now = current
                    .get(key)
                    .or_else(|| (key == Key::ResourceType).then(|| Value::Text(RT_DATA.into())));
                if now != Some(given) {
                    return Err(PropertyError::Immutable(key.name()));
                }
            }
        }
        Ok(())
    }

    /// The result of an update of `current` (POST/PUT: `replace`, every mutable property
    /// not given goes back to its default; iPATCH: only those given change).
    pub fn update(&self, current: &Properties, replace: bool) -> Result<Properties, PropertyError> {
        self.check_immutables(current)?;
        self.check_initialize()?;
        let mut next = if replace {
            Properties {
                topic_name: current.topic_name.clone(),
                topic_data: current.topic_data.clone(),
                resource_type: current.resource_type.clone(),
                partitions: current.partitions,
                replication_factor: current.replication_factor,
                ..self.clone()
            }
        } else {
            let mut next = current.clone();
            for key in Key::ALL.into_iter().filter(|k| !k.immutable()) {
                if let Some(v) = self.get(key) {
                    next.set(key, v)?;
                }
            }
            next
        };
        next.max_subscribers = None;
        Ok(next)
    }

    /// `initialize` needs `topic-content-format` (§2.2.1).
    pub fn check_initialize(&self) -> Result<(), PropertyError> {
        if self.initialize.is_some() && self.topic_content_format.is_none() {
            return Err(PropertyError::Missing(Key::TopicContentFormat.name()));
        }
        Ok(())
    }
}

/// The keys a FETCH of a topic asks for: a CBOR array of keys (integers, or names).
pub fn decode_key_list(bytes: &[u8]) -> Result<Vec<Key>, PropertyError> {
    let value: Value = ciborium::from_reader(bytes).map_err(|_| PropertyError::Shape("array"))?;
    let Value::Array(items) = value else {
        return Err(PropertyError::Shape("array"));
    };
    items.iter().map(Key::of).collect()
}

/// Encodes a CBOR value.
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("a Value always encodes");
    out
}

fn describe(key: &Value) -> String {
    match key {
        Value::Integer(i) => i128::from(*i).to_string(),
        Value::Text(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: Value) -> Vec<u8> {
        encode(&value)
    }

    fn map(entries: Vec<(Value, Value)>) -> Vec<u8> {
        cbor(Value::Map(entries))
    }

    fn int(i: i64) -> Value {
        Value::Integer(i.into())
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn integer_and_text_keys_decode_alike() {
        let by_int = map(vec![
            (int(0), text("living-room-sensor")),
            (int(2), text("core.ps.data")),
            (int(3), int(112)),
            (int(5), Value::Tag(1, Box::new(int(1680393599)))),
            (int(-65537), int(3)),
        ]);
        let by_name = map(vec![
            (text("topic-name"), text("living-room-sensor")),
            (text("resource-type"), text("core.ps.data")),
            (text("topic-content-format"), int(112)),
            (
                text("expiration-date"),
                Value::Tag(1, Box::new(int(1680393599))),
            ),
            (text("partitions"), int(3)),
        ]);
        let a = Properties::decode(&by_int).unwrap();
        assert_eq!(a, Properties::decode(&by_name).unwrap());
        assert_eq!(a.topic_name.as_deref(), Some("living-room-sensor"));
        assert_eq!(a.resource_type.as_deref(), Some(RT_DATA));
        assert_eq!(a.topic_content_format, Some(112));
        assert_eq!(a.expiration_date, Some(1680393599));
        assert_eq!(a.partitions, Some(3));
    }

    #[test]
    fn encoding_uses_integer_keys_in_order() {
        let p = Properties {
            topic_name: Some("t".into()),
            topic_data: Some("/ps/data/t".into()),
            resource_type: Some(RT_DATA.into()),
            ..Properties::default()
        };
        // {0: "t", 1: "/ps/data/t", 2: "core.ps.data"}
        let mut expected = vec![0xa3, 0x00, 0x61, b't', 0x01, 0x6a];
        expected.extend_from_slice(b"/ps/data/t");
        expected.extend_from_slice(&[0x02, 0x6c]);
        expected.extend_from_slice(b"core.ps.data");
        assert_eq!(p.encode(), expected);
        assert_eq!(Properties::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let refuse = |bytes: Vec<u8>| Properties::decode(&bytes).unwrap_err();
        assert_eq!(refuse(cbor(text("x"))), PropertyError::Shape("map"));
        assert_eq!(refuse(b"\xff".to_vec()), PropertyError::Shape("map"));
        assert_eq!(
            refuse(map(vec![(int(99), int(1))])),
            PropertyError::Unknown("99".into())
        );
        assert_eq!(
            refuse(map(vec![(text("colour"), int(1))])),
            PropertyError::Unknown("\"colour\"".into())
        );
        assert_eq!(
            refuse(map(vec![(int(0), int(1))])),
            PropertyError::Type("topic-name", "text")
        );
        assert_eq!(
            refuse(map(vec![
                (int(0), text("a")),
                (text("topic-name"), text("b"))
            ])),
            PropertyError::Repeated("topic-name")
        );
        assert_eq!(
            refuse(map(vec![(int(7), int(0))])),
            PropertyError::Type("observer-check", "greater than 0")
        );
        assert_eq!(
            refuse(map(vec![(int(5), int(17))])),
            PropertyError::Type("expiration-date", "an epoch date (tag 1) not before 1970")
        );
        assert_eq!(
            refuse(map(vec![(int(3), int(70000))])),
            PropertyError::Type("topic-content-format", "a smaller unsigned integer")
        );
    }

    #[test]
    fn filters_match_when_every_given_property_is_equal() {
        let topic = Properties {
            topic_name: Some("temperature".into()),
            resource_type: Some(RT_DATA.into()),
            topic_type: Some("temperature".into()),
            ..Properties::default()
        };
        let filter = |entries| Properties::decode(&map(entries)).unwrap();
        assert!(
            filter(vec![]).matches(&topic),
            "the empty filter matches all"
        );
        assert!(
            filter(vec![(int(0), text("temperature")), (int(2), text(RT_DATA))]).matches(&topic)
        );
        assert!(!filter(vec![(int(0), text("humidity"))]).matches(&topic));
        assert!(
            !filter(vec![(int(3), int(60))]).matches(&topic),
            "a property the topic does not have"
        );
    }

    #[test]
    fn updates_replace_or_patch_and_keep_immutables() {
        let current = Properties {
            topic_name: Some("t".into()),
            topic_data: Some("/ps/data/t".into()),
            resource_type: Some(RT_DATA.into()),
            topic_type: Some("temperature".into()),
            observer_check: Some(60),
            partitions: Some(1),
            ..Properties::default()
        };
        let request = |entries| Properties::decode(&map(entries)).unwrap();
        let patch = request(vec![(int(6), int(5)), (int(3), int(112))]);
        let patched = patch.update(&current, false).unwrap();
        assert_eq!(patched.topic_type.as_deref(), Some("temperature"));
        assert_eq!(patched.topic_content_format, Some(112));
        assert_eq!(patched.observer_check, Some(60));
        assert_eq!(
            patched.max_subscribers, None,
            "max-subscribers is not stored"
        );

        let replaced = request(vec![(int(0), text("t")), (int(3), int(112))])
            .update(&current, true)
            .unwrap();
        assert_eq!(
            replaced.topic_type, None,
            "POST resets what it does not give"
        );
        assert_eq!(replaced.observer_check, None);
        assert_eq!(replaced.topic_data.as_deref(), Some("/ps/data/t"));

        assert_eq!(
            request(vec![(int(0), text("u"))]).update(&current, false),
            Err(PropertyError::Immutable("topic-name"))
        );
        assert_eq!(
            request(vec![(int(-65537), int(2))]).update(&current, true),
            Err(PropertyError::Immutable("partitions"))
        );
        assert_eq!(
            request(vec![(int(8), Value::Bytes(vec![0x80]))]).update(&current, false),
            Err(PropertyError::Missing("topic-content-format"))
        );
    }

    #[test]
    fn a_fetch_names_keys_by_number_or_name() {
        assert_eq!(
            decode_key_list(&cbor(Value::Array(vec![int(1), int(3)]))).unwrap(),
            vec![Key::TopicData, Key::TopicContentFormat]
        );
        assert_eq!(
            decode_key_list(&cbor(Value::Array(vec![text("topic-type")]))).unwrap(),
            vec![Key::TopicType]
        );
        assert!(decode_key_list(&cbor(Value::Array(vec![int(42)]))).is_err());
        assert_eq!(
            decode_key_list(&map(vec![])),
            Err(PropertyError::Shape("array"))
        );
    }
}
