//! Golden CBOR vectors: the exact bytes of every message type.
//!
//! Each vector was produced once by [`encode`] and checked by an independent CBOR
//! decoder (Python's `cbor2`). If one of these fails, the wire format changed: that is a
//! protocol change, to be made deliberately (and every peer updated), not by accident.

use alloc::vec;
use alloc::vec::Vec;

use super::samples::*;
use super::ALL_ERROR_KINDS;
use crate::wire::*;

/// `golden!(test_name: Type = value, "hex")`: the value encodes to exactly these bytes,
/// and these bytes decode to exactly the value.
macro_rules! golden {
    ($name:ident: $ty:ty = $value:expr, $hex:literal) => {
        #[test]
        fn $name() {
            let value: $ty = $value;
            let bytes = encode(&value).expect("encode");
            assert_eq!(
                hex::encode(&bytes),
                $hex,
                "the CBOR encoding of {} changed",
                stringify!($ty)
            );
            let golden = hex::decode($hex).expect("golden vector is hex");
            let decoded: $ty = decode(&golden).expect("golden vector decodes");
            assert_eq!(decoded, value);
        }
    };
}

// health.rs
golden!(node_health: NodeHealth = health(), "a66c6370755f7065726d696c6c6518fa6f6d656d6f72795f7065726d696c6c65190258706469736b5f696f5f7065726d696c6c6500667274745f6d730c70626174746572795f7065726d696c6c6519036b686661696c7572657301");
golden!(node_health_mains_powered: NodeHealth = NodeHealth { battery_permille: None, ..health() }, "a56c6370755f7065726d696c6c6518fa6f6d656d6f72795f7065726d696c6c65190258706469736b5f696f5f7065726d696c6c6500667274745f6d730c686661696c7572657301");

// session.rs
golden!(session_open: SessionOpen = SessionOpen { timeout_ms: 30_000, node: Some(s("dev-7")), health: Some(health()) }, "a36a74696d656f75745f6d73197530646e6f6465656465762d37666865616c7468a66c6370755f7065726d696c6c6518fa6f6d656d6f72795f7065726d696c6c65190258706469736b5f696f5f7065726d696c6c6500667274745f6d730c70626174746572795f7065726d696c6c6519036b686661696c7572657301");
golden!(session_open_minimal: SessionOpen = SessionOpen { timeout_ms: 30_000, node: None, health: None }, "a16a74696d656f75745f6d73197530");
golden!(session_opened: SessionOpened = SessionOpened { session: 0x0123_4567_89ab_cdef, timeout_ms: 30_000, incarnation: None }, "a26773657373696f6e1b0123456789abcdef6a74696d656f75745f6d73197530");
golden!(heartbeat: Heartbeat = Heartbeat { health: health(), sleep_ms: None }, "a1666865616c7468a66c6370755f7065726d696c6c6518fa6f6d656d6f72795f7065726d696c6c65190258706469736b5f696f5f7065726d696c6c6500667274745f6d730c70626174746572795f7065726d696c6c6519036b686661696c7572657301");
golden!(heartbeat_ack: HeartbeatAck = HeartbeatAck {
    lease_ms: 45_000,
    directives: vec![
        Directive::SleepUntil { at_ms: 1_700_000_060_000 },
        Directive::StayAwake,
        Directive::WakeNow,
        Directive::Rejoin,
    ],
    incarnation: None,
}, "a2686c656173655f6d7319afc86a6469726563746976657384a16b736c6565705f756e74696ca16561745f6d731b0000018bcfe652606a737461795f6177616b656877616b655f6e6f776672656a6f696e");
golden!(heartbeat_ack_empty: HeartbeatAck = HeartbeatAck { lease_ms: 30_000, directives: vec![], incarnation: None }, "a2686c656173655f6d731975306a6469726563746976657380");
golden!(directive_stay_awake: Directive = Directive::StayAwake, "6a737461795f6177616b65");
golden!(directive_sleep_until: Directive = Directive::SleepUntil { at_ms: 1000 }, "a16b736c6565705f756e74696ca16561745f6d731903e8");

// znode.rs
golden!(create_request: CreateRequest = CreateRequest { data: b"cfg".to_vec(), ephemeral: true, sequential: true, session: Some(42), request: None }, "a464646174614363666769657068656d6572616cf56a73657175656e7469616cf56773657373696f6e182a");
golden!(create_request_persistent: CreateRequest = CreateRequest { data: vec![], ephemeral: false, sequential: false, session: None, request: None }, "a364646174614069657068656d6572616cf46a73657175656e7469616cf4");
golden!(create_response: CreateResponse = CreateResponse { path: s("/q/item-0000000007"), stat: stat() }, "a26470617468722f712f6974656d2d303030303030303030376473746174aa65637a78696405656d7a7869640765707a78696405686374696d655f6d731b0000018bcfe56800686d74696d655f6d731b0000018bcfe569f46776657273696f6e02686376657273696f6e006f657068656d6572616c5f6f776e6572182a6b646174615f6c656e677468036c6e756d5f6368696c6472656e00");
golden!(stat_ephemeral: Stat = stat(), "aa65637a78696405656d7a7869640765707a78696405686374696d655f6d731b0000018bcfe56800686d74696d655f6d731b0000018bcfe569f46776657273696f6e02686376657273696f6e006f657068656d6572616c5f6f776e6572182a6b646174615f6c656e677468036c6e756d5f6368696c6472656e00");
golden!(stat_persistent: Stat = Stat { ephemeral_owner: None, ..stat() }, "a965637a78696405656d7a7869640765707a78696405686374696d655f6d731b0000018bcfe56800686d74696d655f6d731b0000018bcfe569f46776657273696f6e02686376657273696f6e006b646174615f6c656e677468036c6e756d5f6368696c6472656e00");
golden!(node_data: NodeData = NodeData { data: b"cfg".to_vec(), stat: stat() }, "a26464617461436366676473746174aa65637a78696405656d7a7869640765707a78696405686374696d655f6d731b0000018bcfe56800686d74696d655f6d731b0000018bcfe569f46776657273696f6e02686376657273696f6e006f657068656d6572616c5f6f776e6572182a6b646174615f6c656e677468036c6e756d5f6368696c6472656e00");
golden!(set_data_request: SetDataRequest = SetDataRequest { data: b"v2".to_vec(), version: Some(2), session: Some(42), request: None }, "a364646174614276326776657273696f6e026773657373696f6e182a");
golden!(set_data_request_any_version: SetDataRequest = SetDataRequest { data: b"v2".to_vec(), version: None, session: None, request: None }, "a16464617461427632");
golden!(children: Children = Children { children: vec![s("a"), s("b")], stat: Stat::default() }, "a2686368696c6472656e82616161626473746174a965637a78696400656d7a7869640065707a78696400686374696d655f6d7300686d74696d655f6d73006776657273696f6e00686376657273696f6e006b646174615f6c656e677468006c6e756d5f6368696c6472656e00");
golden!(multi_request: MultiRequest = MultiRequest { ops: multi_ops(), session: Some(42), request: None }, "a2636f707384a166637265617465a46470617468622f616464617461417869657068656d6572616cf56a73657175656e7469616cf4a1687365745f64617461a36470617468622f626464617461406776657273696f6e01a16664656c657465a16470617468622f63a165636865636ba26470617468622f646776657273696f6e006773657373696f6e182a");
golden!(multi_op_delete: MultiOp = MultiOp::Delete { path: s("/c"), version: Some(3) }, "a16664656c657465a26470617468622f636776657273696f6e03");
golden!(multi_response: MultiResponse = MultiResponse { results: multi_results() }, "a167726573756c747385a166637265617465a16470617468622f61a1687365745f64617461a16473746174a965637a78696400656d7a7869640065707a78696400686374696d655f6d7300686d74696d655f6d73006776657273696f6e00686376657273696f6e006b646174615f6c656e677468006c6e756d5f6368696c6472656e006664656c65746565636865636ba1656572726f72a1656572726f727076657273696f6e5f6d69736d61746368");
golden!(multi_result_check: MultiResult = MultiResult::Check, "65636865636b");
golden!(sync_response: SyncResponse = SyncResponse { zxid: 1_000_000 }, "a1647a7869641a000f4240");
golden!(watch_event: WatchEvent = WatchEvent { kind: WatchEventKind::DataChanged, path: s("/cfg"), zxid: 9 }, "a3646b696e646c646174615f6368616e6765646470617468642f636667647a78696409");
golden!(watch_event_kinds: Vec<WatchEventKind> = vec![
    WatchEventKind::Created,
    WatchEventKind::DataChanged,
    WatchEventKind::ChildrenChanged,
    WatchEventKind::Deleted,
], "8467637265617465646c646174615f6368616e676564706368696c6472656e5f6368616e6765646764656c65746564");

// log.rs
golden!(record_full: Record = record(), "a4636b6579426b316576616c75654568656c6c6f6c74696d657374616d705f6d731b0000018bcfe56800676865616465727381a2636b65796263746576616c756543747874");
golden!(record_minimal: Record = Record { key: None, value: b"hi".to_vec(), timestamp_ms: 0, headers: vec![] }, "a26576616c75654268696c74696d657374616d705f6d7300");
golden!(header: Header = Header { key: s("ct"), value: b"txt".to_vec() }, "a2636b65796263746576616c756543747874");
golden!(record_batch: RecordBatch = RecordBatch { records: vec![record(), Record { key: None, headers: vec![], ..record() }] }, "a1677265636f72647382a4636b6579426b316576616c75654568656c6c6f6c74696d657374616d705f6d731b0000018bcfe56800676865616465727381a2636b65796263746576616c756543747874a26576616c75654568656c6c6f6c74696d657374616d705f6d731b0000018bcfe56800");
golden!(acks: Vec<Acks> = vec![Acks::None, Acks::Leader, Acks::All], "83000120");
golden!(produce_request: ProduceRequest = produce(), "a765746f7069636574656d707369706172746974696f6e036461636b73206b70726f64756365725f6964096d626173655f73657175656e636518646c6c65616465725f65706f63680465626174636843a10001");
golden!(produce_request_minimal: ProduceRequest = ProduceRequest {
    producer_id: None,
    base_sequence: None,
    gapless: false,
    leader_epoch: None,
    if_log_end: None,
    acks: Acks::Leader,
    ..produce()
}, "a465746f7069636574656d707369706172746974696f6e036461636b730165626174636843a10001");
golden!(produce_request_gapless: ProduceRequest = ProduceRequest {
    gapless: true,
    leader_epoch: None,
    ..produce()
}, "a765746f7069636574656d707369706172746974696f6e036461636b73206b70726f64756365725f6964096d626173655f73657175656e63651864676761706c657373f565626174636843a10001");
golden!(produce_response: ProduceResponse = ProduceResponse { base_offset: 4096, record_count: 2, leader_epoch: 4 }, "a36b626173655f6f66667365741910006c7265636f72645f636f756e74026c6c65616465725f65706f636804");
golden!(fetch_request: FetchRequest = FetchRequest {
    topic: s("temps"),
    partition: 3,
    offset: 4096,
    max_bytes: 65_536,
    leader_epoch: Some(4),
    replica: Some(2),
}, "a665746f7069636574656d707369706172746974696f6e03666f6666736574191000696d61785f62797465731a000100006c6c65616465725f65706f636804677265706c69636102");
golden!(fetch_request_consumer: FetchRequest = FetchRequest {
    topic: s("temps"),
    partition: 3,
    offset: 0,
    max_bytes: 1024,
    leader_epoch: None,
    replica: None,
}, "a465746f7069636574656d707369706172746974696f6e03666f666673657400696d61785f6279746573190400");
golden!(fetched_batch: FetchedBatch = FetchedBatch { base_offset: 7, batch: vec![0xa1, 0x00, 0x01] }, "a26b626173655f6f66667365740765626174636843a10001");
golden!(fetch_response: FetchResponse = FetchResponse {
    high_watermark: 9,
    log_end_offset: 10,
    batches: vec![FetchedBatch { base_offset: 7, batch: vec![0xa1, 0x00, 0x01] }],
}, "a36e686967685f77617465726d61726b096e6c6f675f656e645f6f66667365740a676261746368657381a26b626173655f6f66667365740765626174636843a10001");
golden!(partition_metadata: PartitionMetadata = partition(), "a569706172746974696f6e00666c6561646572016c6c65616465725f65706f636803687265706c69636173820102636973728101");
golden!(partition_metadata_leaderless: PartitionMetadata = PartitionMetadata { leader: None, isr: vec![], ..partition() }, "a469706172746974696f6e006c6c65616465725f65706f636803687265706c696361738201026369737280");
golden!(topic_metadata: TopicMetadata = TopicMetadata { topic: s("temps"), partitions: vec![partition()] }, "a265746f7069636574656d70736a706172746974696f6e7381a569706172746974696f6e00666c6561646572016c6c65616465725f65706f636803687265706c69636173820102636973728101");
golden!(topic_config: TopicConfig = TopicConfig { partitions: 3, replication_factor: 2, min_insync_replicas: None }, "a26a706172746974696f6e7303727265706c69636174696f6e5f666163746f7202");
golden!(broker_info: BrokerInfo = broker(), "a46269640164616464726d31302e302e302e313a3536383364686f73746470692d61647261636b627231");
golden!(broker_info_no_rack: BrokerInfo = BrokerInfo { rack: None, ..broker() }, "a36269640164616464726d31302e302e302e313a3536383364686f73746470692d61");
golden!(metadata_response: MetadataResponse = MetadataResponse {
    brokers: vec![broker()],
    topics: vec![TopicMetadata { topic: s("temps"), partitions: vec![partition()] }],
}, "a26762726f6b65727381a46269640164616464726d31302e302e302e313a3536383364686f73746470692d61647261636b62723166746f7069637381a265746f7069636574656d70736a706172746974696f6e7381a569706172746974696f6e00666c6561646572016c6c65616465725f65706f636803687265706c69636173820102636973728101");

// pehra.rs
golden!(node_roles: Vec<NodeRole> = vec![NodeRole::Pehredar, NodeRole::Awake, NodeRole::Dormant, NodeRole::OptedOut], "84687065687265646172656177616b6567646f726d616e74696f707465645f6f7574");
golden!(check_in: CheckIn = CheckIn {
    node: s("dev-7"),
    role: NodeRole::Dormant,
    mains_powered: false,
    next_alarm_ms: Some(1_700_000_060_000),
    traffic_waiting: true,
    health: Some(health()),
}, "a6646e6f6465656465762d3764726f6c6567646f726d616e746d6d61696e735f706f7765726564f46d6e6578745f616c61726d5f6d731b0000018bcfe652606f747261666669635f77616974696e67f5666865616c7468a66c6370755f7065726d696c6c6518fa6f6d656d6f72795f7065726d696c6c65190258706469736b5f696f5f7065726d696c6c6500667274745f6d730c70626174746572795f7065726d696c6c6519036b686661696c7572657301");
golden!(check_in_minimal: CheckIn = CheckIn {
    node: s("gw-2"),
    role: NodeRole::OptedOut,
    mains_powered: true,
    next_alarm_ms: None,
    traffic_waiting: false,
    health: None,
}, "a4646e6f64656467772d3264726f6c65696f707465645f6f75746d6d61696e735f706f7765726564f56f747261666669635f77616974696e67f4");
golden!(check_in_reply: CheckInReply = CheckInReply {
    pehredar: Some(s("gw-1")),
    pehredar_addr: None,
    gateway_ms: None,
    term: Some(term()),
    directive: Directive::SleepUntil { at_ms: 1_700_000_060_000 },
    pending: 3, lease_ms: None,
}, "a46870656872656461726467772d31647465726da4666e756d626572076870656872656461726467772d316a737461727465645f6d731b0000018bcfe5680067656e64735f6d731b0000018bcfee8fc069646972656374697665a16b736c6565705f756e74696ca16561745f6d731b0000018bcfe652606770656e64696e6703");
golden!(check_in_reply_election: CheckInReply = CheckInReply { pehredar: None, pehredar_addr: None, gateway_ms: None, term: None, directive: Directive::StayAwake, pending: 0 , lease_ms: None }, "a2696469726563746976656a737461795f6177616b656770656e64696e6700");
golden!(term_full: Term = term(), "a4666e756d626572076870656872656461726467772d316a737461727465645f6d731b0000018bcfe5680067656e64735f6d731b0000018bcfee8fc0");
golden!(wake_reasons: Vec<WakeReason> = vec![
    WakeReason::Traffic,
    WakeReason::PehredarLost,
    WakeReason::Admin,
    WakeReason::Maintenance,
    WakeReason::Election,
], "8567747261666669636d70656872656461725f6c6f73746561646d696e6b6d61696e74656e616e636568656c656374696f6e");
golden!(wake: Wake = Wake { reason: WakeReason::Traffic, term: 7 }, "a266726561736f6e6774726166666963647465726d07");
golden!(election_result: ElectionResult = ElectionResult { term: term(), candidates: vec![s("gw-1"), s("gw-2")] }, "a2647465726da4666e756d626572076870656872656461726467772d316a737461727465645f6d731b0000018bcfe5680067656e64735f6d731b0000018bcfee8fc06a63616e64696461746573826467772d316467772d32");
golden!(mode_change: ModeChange = ModeChange { enabled: false, issued_ms: 1_700_000_000_000, nonce: vec![1, 2, 3, 4], mac: vec![0xde, 0xad, 0xbe, 0xef] }, "a467656e61626c6564f4696973737565645f6d731b0000018bcfe56800656e6f6e63654401020304636d616344deadbeef");

// error.rs
golden!(error_body: ErrorBody = ErrorBody { error: ErrorKind::Asleep, message: s("dormant until alarm"), retry_after_ms: Some(5000) }, "a3656572726f726661736c656570676d65737361676573646f726d616e7420756e74696c20616c61726d6e72657472795f61667465725f6d73191388");
golden!(error_body_no_retry: ErrorBody = ErrorBody::new(ErrorKind::NotFound, "no znode /x"), "a2656572726f72696e6f745f666f756e64676d6573736167656b6e6f207a6e6f6465202f78");
golden!(error_kinds: Vec<ErrorKind> = ALL_ERROR_KINDS[..17].to_vec(), "91696d616c666f726d65646c756e617574686f72697a6564696e6f745f666f756e64726d6574686f645f6e6f745f616c6c6f7765647076657273696f6e5f6d69736d6174636869746f6f5f6c61726765781a756e737570706f727465645f636f6e74656e745f666f726d617464627573796661736c6565706b6e6f64655f657869737473696e6f745f656d7074796f73657373696f6e5f657870697265646a6e6f745f6c65616465726c66656e6365645f65706f6368736e6f745f656e6f7567685f7265706c6963617368696e7465726e616c69666f7262696464656e");
golden!(error_kind_out_of_order_sequence: ErrorKind = ErrorKind::OutOfOrderSequence, "756f75745f6f665f6f726465725f73657175656e6365");

#[test]
fn record_counts_come_from_the_batch_header() {
    for n in [0usize, 1, 23, 24, 255, 256, 1000] {
        let batch = RecordBatch {
            records: (0..n)
                .map(|i| Record {
                    key: None,
                    value: vec![i as u8],
                    timestamp_ms: 1,
                    headers: vec![],
                })
                .collect(),
        };
        let bytes = encode(&batch).unwrap();
        assert_eq!(batch_record_count(&bytes).unwrap(), n as u32, "{n} records");
    }
    assert!(
        batch_record_count(&hex::decode("a167726563").unwrap()).is_err(),
        "truncated"
    );
    assert!(
        batch_record_count(&hex::decode("a1657265636f7201").unwrap()).is_err(),
        "another key"
    );
    assert!(
        batch_record_count(&hex::decode("a1677265636f7264730a").unwrap()).is_err(),
        "not an array"
    );
    assert!(batch_record_count(&hex::decode("a167726563f7264739f").unwrap_or_default()).is_err());
}

// replication (log.rs)
golden!(topic_config_min_insync: TopicConfig = TopicConfig { partitions: 3, replication_factor: 3, min_insync_replicas: Some(2) }, "a36a706172746974696f6e7303727265706c69636174696f6e5f666163746f7203736d696e5f696e73796e635f7265706c6963617302");
golden!(replica_fetch_request: ReplicaFetchRequest = ReplicaFetchRequest {
    replica: 2,
    max_wait_ms: 500,
    max_bytes: 32_768,
    partitions: vec![
        ReplicaFetchPartition { topic: s("temps"), partition: 3, offset: 4096, leader_epoch: 4, last_fetched_epoch: Some(3), high_watermark: None },
        ReplicaFetchPartition { topic: s("temps"), partition: 0, offset: 0, leader_epoch: 1, last_fetched_epoch: None, high_watermark: None },
    ],
}, "a4677265706c696361026b6d61785f776169745f6d731901f4696d61785f62797465731980006a706172746974696f6e7382a565746f7069636574656d707369706172746974696f6e03666f66667365741910006c6c65616465725f65706f636804726c6173745f666574636865645f65706f636803a465746f7069636574656d707369706172746974696f6e00666f6666736574006c6c65616465725f65706f636801");
golden!(replica_fetch_response: ReplicaFetchResponse = ReplicaFetchResponse {
    partitions: vec![
        ReplicaPartitionData {
            topic: s("temps"), partition: 3, error: None, high_watermark: 4000, log_start_offset: 0, log_end_offset: 4098, diverging: None,
            batches: vec![ReplicaBatch { base_offset: 4096, record_count: 2, leader_epoch: 4, max_timestamp_ms: 1_700_000_000_000, producer_id: Some(7), base_sequence: Some(10), batch: vec![0xa1, 0x00, 0x01] }],
        },
        ReplicaPartitionData {
            topic: s("temps"), partition: 0, error: Some(ErrorKind::FencedEpoch), high_watermark: 0, log_start_offset: 0, log_end_offset: 0, diverging: None, batches: vec![],
        },
        ReplicaPartitionData {
            topic: s("temps"), partition: 1, error: None, high_watermark: 10, log_start_offset: 0, log_end_offset: 12, diverging: Some(EpochEndOffset { epoch: 2, end_offset: 11 }), batches: vec![],
        },
    ],
}, "a16a706172746974696f6e7383a665746f7069636574656d707369706172746974696f6e036e686967685f77617465726d61726b190fa0706c6f675f73746172745f6f6666736574006e6c6f675f656e645f6f6666736574191002676261746368657381a76b626173655f6f66667365741910006c7265636f72645f636f756e74026c6c65616465725f65706f636804706d61785f74696d657374616d705f6d731b0000018bcfe568006b70726f64756365725f6964076d626173655f73657175656e63650a65626174636843a10001a765746f7069636574656d707369706172746974696f6e00656572726f726c66656e6365645f65706f63686e686967685f77617465726d61726b00706c6f675f73746172745f6f6666736574006e6c6f675f656e645f6f666673657400676261746368657380a765746f7069636574656d707369706172746974696f6e016e686967685f77617465726d61726b0a706c6f675f73746172745f6f6666736574006e6c6f675f656e645f6f66667365740c69646976657267696e67a26565706f6368026a656e645f6f66667365740b676261746368657380");
