use super::*;

fn create(path: &str, data: &[u8]) -> Op {
    Op::Create {
        path: path.into(),
        data: data.to_vec(),
        ephemeral: false,
        sequential: false,
        session: None,
    }
}

fn ephemeral(path: &str, session: u64, sequential: bool) -> Op {
    Op::Create {
        path: path.into(),
        data: Vec::new(),
        ephemeral: true,
        sequential,
        session: Some(session),
    }
}

#[test]
fn create_get_and_stat_fields() {
    let mut t = DataTree::default();
    let (out, changes) = t.apply(1, 100, &create("/a", b"x")).unwrap();
    assert!(matches!(out, Outcome::Created { ref path, .. } if path == "/a"));
    assert_eq!(
        changes,
        [
            Change::Created("/a".into()),
            Change::ChildrenChanged("/".into())
        ]
    );
    t.apply(2, 200, &create("/a/b", b"yy")).unwrap();
    let (data, stat) = t.get("/a/b").unwrap();
    assert_eq!(data, b"yy");
    assert_eq!(
        (
            stat.czxid,
            stat.mzxid,
            stat.ctime_ms,
            stat.version,
            stat.data_length
        ),
        (2, 2, 200, 0, 2)
    );
    let (_, a) = t.get("/a").unwrap();
    assert_eq!((a.cversion, a.pzxid, a.num_children, a.mzxid), (1, 2, 1, 1));
    assert_eq!(t.children("/").unwrap().0, ["a"]);
    assert_eq!(t.last_zxid(), 2);
}

#[test]
fn create_refuses_existing_missing_parent_bad_path_and_large_data() {
    let mut t = DataTree::default();
    t.apply(1, 0, &create("/a", b"")).unwrap();
    assert_eq!(
        t.apply(2, 0, &create("/a", b"")).unwrap_err(),
        TreeError::NodeExists("/a".into())
    );
    assert_eq!(
        t.apply(2, 0, &create("/x/y", b"")).unwrap_err(),
        TreeError::NoNode("/x".into())
    );
    assert!(matches!(
        t.apply(2, 0, &create("/a/", b"")),
        Err(TreeError::BadPath(_))
    ));
    let big = vec![0; MAX_DATA_LEN + 1];
    assert_eq!(
        t.apply(2, 0, &create("/b", &big)).unwrap_err(),
        TreeError::TooLarge(MAX_DATA_LEN + 1)
    );
    assert_eq!(t.last_zxid(), 1, "failed ops do not advance the zxid");
    let before = t.clone();
    for op in [
        create("/a", b""),
        Op::Delete {
            path: "/nope".into(),
            version: None,
        },
        Op::SetData {
            path: "/a".into(),
            data: vec![],
            version: Some(9),
        },
    ] {
        assert!(t.apply(2, 0, &op).is_err());
    }
    assert_eq!(
        t, before,
        "a refused single op changes nothing (no journal needed)"
    );
}

#[test]
fn sequential_names_use_the_parents_counter() {
    let mut t = DataTree::default();
    t.apply(1, 0, &create("/q", b"")).unwrap();
    let seq = Op::Create {
        path: "/q/item-".into(),
        data: vec![],
        ephemeral: false,
        sequential: true,
        session: None,
    };
    let mut names = Vec::new();
    for zxid in 2..5 {
        let (Outcome::Created { path, .. }, _) = t.apply(zxid, 0, &seq).unwrap() else {
            panic!()
        };
        names.push(path);
    }
    assert_eq!(
        names,
        [
            "/q/item-0000000000",
            "/q/item-0000000001",
            "/q/item-0000000002"
        ]
    );
    t.apply(
        5,
        0,
        &Op::Delete {
            path: names[2].clone(),
            version: None,
        },
    )
    .unwrap();
    let (Outcome::Created { path, .. }, _) = t.apply(6, 0, &seq).unwrap() else {
        panic!()
    };
    assert_eq!(
        path, "/q/item-0000000004",
        "never reused, even after a delete"
    );
}

#[test]
fn versions_guard_set_and_delete() {
    let mut t = DataTree::default();
    t.apply(1, 0, &create("/a", b"1")).unwrap();
    let set = |v| Op::SetData {
        path: "/a".into(),
        data: b"2".to_vec(),
        version: v,
    };
    let (Outcome::DataSet { stat }, _) = t.apply(2, 50, &set(Some(0))).unwrap() else {
        panic!()
    };
    assert_eq!((stat.version, stat.mzxid, stat.mtime_ms), (1, 2, 50));
    assert_eq!(
        t.apply(3, 0, &set(Some(0))).unwrap_err(),
        TreeError::BadVersion {
            path: "/a".into(),
            actual: 1
        }
    );
    assert_eq!(
        t.apply(3, 0, &set(None)).unwrap().0,
        Outcome::DataSet {
            stat: *t.get("/a").unwrap().1
        }
    );
    let delete = |v| Op::Delete {
        path: "/a".into(),
        version: v,
    };
    assert!(matches!(
        t.apply(4, 0, &delete(Some(0))),
        Err(TreeError::BadVersion { actual: 2, .. })
    ));
    t.apply(4, 0, &delete(Some(2))).unwrap();
    assert!(t.get("/a").is_none());
}

#[test]
fn delete_refuses_nodes_with_children_and_the_root() {
    let mut t = DataTree::default();
    t.apply(1, 0, &create("/a", b"")).unwrap();
    t.apply(2, 0, &create("/a/b", b"")).unwrap();
    assert_eq!(
        t.apply(
            3,
            0,
            &Op::Delete {
                path: "/a".into(),
                version: None
            }
        )
        .unwrap_err(),
        TreeError::NotEmpty("/a".into())
    );
    assert_eq!(
        t.apply(
            3,
            0,
            &Op::Delete {
                path: "/".into(),
                version: None
            }
        )
        .unwrap_err(),
        TreeError::Root("deleted")
    );
}

#[test]
fn closing_a_session_deletes_its_ephemerals() {
    let mut t = DataTree::default();
    t.apply(
        1,
        0,
        &Op::CreateSession {
            session: 7,
            timeout_ms: 5000,
            owner: None,
        },
    )
    .unwrap();
    t.apply(2, 0, &create("/members", b"")).unwrap();
    t.apply(3, 0, &ephemeral("/members/m-", 7, true)).unwrap();
    t.apply(4, 0, &ephemeral("/lock", 7, false)).unwrap();
    assert_eq!(t.get("/lock").unwrap().1.ephemeral_owner, Some(7));
    assert_eq!(
        t.apply(5, 0, &create("/lock/child", b"")).unwrap_err(),
        TreeError::EphemeralParent("/lock".into())
    );
    assert_eq!(
        t.apply(5, 0, &ephemeral("/e", 99, false)).unwrap_err(),
        TreeError::SessionExpired(99)
    );
    let (out, changes) = t.apply(5, 0, &Op::CloseSession { session: 7 }).unwrap();
    assert_eq!(
        out,
        Outcome::SessionClosed {
            deleted: vec!["/members/m-0000000000".into(), "/lock".into()]
        }
    );
    assert!(changes.contains(&Change::Deleted("/lock".into())));
    assert!(changes.contains(&Change::ChildrenChanged("/members".into())));
    assert!(t.get("/lock").is_none() && t.children("/members").unwrap().0.is_empty());
    assert!(t.sessions().is_empty());
}

#[test]
fn failed_multi_changes_nothing() {
    let mut t = DataTree::default();
    t.apply(1, 0, &create("/a", b"1")).unwrap();
    let before = t.clone();
    let multi = Op::Multi {
        ops: vec![
            create("/b", b""),
            Op::SetData {
                path: "/a".into(),
                data: b"2".to_vec(),
                version: None,
            },
            Op::Delete {
                path: "/a".into(),
                version: Some(0),
            }, // version is 1 by now
        ],
    };
    let err = t.apply(2, 0, &multi).unwrap_err();
    assert!(matches!(err, TreeError::Multi { index: 2, .. }), "{err}");
    assert_eq!(t, before, "rolled back whole");
    let ok = Op::Multi {
        ops: vec![
            create("/b", b""),
            Op::Check {
                path: "/a".into(),
                version: Some(0),
            },
        ],
    };
    let (Outcome::Multi(outcomes), _) = t.apply(2, 0, &ok).unwrap() else {
        panic!()
    };
    assert_eq!(outcomes.len(), 2);
    assert!(t.get("/b").is_some());
}

#[test]
fn replay_rebuilds_the_same_tree_and_snapshots_round_trip() {
    let ops = [
        Op::CreateSession {
            session: 1,
            timeout_ms: 3000,
            owner: Some("broker-1".into()),
        },
        create("/a", b"x"),
        ephemeral("/a/e-", 1, true),
        Op::SetData {
            path: "/a".into(),
            data: b"y".to_vec(),
            version: Some(0),
        },
        Op::Multi {
            ops: vec![create("/b", b""), create("/b/c", b"z")],
        },
        Op::CloseSession { session: 1 },
    ];
    let mut first = DataTree::default();
    let mut second = DataTree::default();
    for (i, op) in ops.iter().enumerate() {
        first.apply(i as u64 + 1, 1000 + i as u64, op).unwrap();
    }
    for (i, op) in ops.iter().enumerate() {
        second.apply(i as u64 + 1, 1000 + i as u64, op).unwrap();
    }
    assert_eq!(first, second);
    let bytes = pehra_shared::wire::encode(&first).unwrap();
    let back: DataTree = pehra_shared::wire::decode(&bytes).unwrap();
    assert_eq!(back, first);
    let op_bytes = pehra_shared::wire::encode(&ops[2]).unwrap();
    assert_eq!(pehra_shared::wire::decode::<Op>(&op_bytes).unwrap(), ops[2]);
}

#[test]
fn a_sessions_last_numbered_request_is_remembered_through_a_snapshot_until_it_closes() {
    let mut t = DataTree::default();
    let open = Op::CreateSession {
        session: 7,
        timeout_ms: 10_000,
        owner: None,
    };
    t.apply(1, 0, &open).unwrap();
    t.apply(2, 0, &create("/r", b"0")).unwrap();
    let id = |number| RequestId { session: 7, number };
    assert_eq!(t.seen(id(1)), Seen::New);
    let set = Op::SetData {
        path: "/r".into(),
        data: b"1".to_vec(),
        version: Some(0),
    };
    let (outcome, _) = t.apply_request(3, 0, &set, Some(id(1))).unwrap();
    assert!(matches!(outcome, Outcome::DataSet { stat } if stat.version == 1));
    // A retry of request 1 is answered with what it did (version 1), not refused as a
    // version mismatch nor applied again.
    assert_eq!(t.seen(id(1)), Seen::Applied(&outcome));
    // A refused request is not remembered: its retry is tried again.
    assert!(t.apply_request(4, 0, &set, Some(id(2))).is_err());
    assert_eq!(t.seen(id(2)), Seen::New);
    assert_eq!(t.seen(id(0)), Seen::Stale { last: 1 });
    // Another session's numbers are its own.
    assert_eq!(
        t.seen(RequestId {
            session: 8,
            number: 1
        }),
        Seen::New
    );
    // The snapshot keeps it (a restart from a snapshot still answers the retry).
    let restored: DataTree =
        pehra_shared::wire::decode(&pehra_shared::wire::encode(&t).unwrap()).unwrap();
    assert_eq!(restored.seen(id(1)), Seen::Applied(&outcome));
    // A session's open and close are not numbered; the close forgets it.
    t.apply_request(5, 0, &Op::CloseSession { session: 7 }, Some(id(3)))
        .unwrap();
    assert_eq!(t.seen(id(1)), Seen::New);
}
