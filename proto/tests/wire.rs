//! Wire-format guards for the transactional `kvrpcpb` messages and the
//! `tikvpb.Tikv` method names.
//!
//! The expected bytes are computed by hand from kvproto's field numbers: a
//! field's tag is `(number << 3) | wire_type`, with wire type 0 for varints
//! (integers, bools, enums) and 2 for length-delimited fields (bytes,
//! messages, packed repeated scalars). A renumbered field changes the bytes.

use bytes::Bytes;
use prost::Message;
use proto::kvrpcpb::{
    prewrite_request, Action, Assertion, AssertionLevel, CheckTxnStatusRequest,
    CheckTxnStatusResponse, CommitRequest, CommitResponse, CommitRole, GetRequest, GetResponse,
    KeyError, KvPair, LockInfo, Mutation, Op, PessimisticLockRequest, PessimisticLockResponse,
    PrewriteRequest, PrewriteResponse, ResolveLockRequest, ScanLockRequest, ScanRequest,
    TxnHeartBeatRequest, TxnInfo, WriteConflict,
};

fn enc<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let back = M::decode(enc(m).as_slice()).expect("decode");
    assert_eq!(&back, m);
}

#[test]
fn prewrite_request_field_numbers() {
    let one = |r: PrewriteRequest| enc(&r);
    let d = PrewriteRequest::default;
    // start_version = 4, varint.
    assert_eq!(
        one(PrewriteRequest {
            start_version: 5,
            ..d()
        }),
        [0x20, 5]
    );
    // mutations = 2: Mutation { op = 1: Del, key = 2: "k" }.
    assert_eq!(
        one(PrewriteRequest {
            mutations: vec![Mutation {
                op: Op::Del as i32,
                key: b("k"),
                ..Default::default()
            }],
            ..d()
        }),
        [0x12, 5, 0x08, 1, 0x12, 1, b'k']
    );
    // primary_lock = 3, bytes.
    assert_eq!(
        one(PrewriteRequest {
            primary_lock: b("p"),
            ..d()
        }),
        [0x1a, 1, b'p']
    );
    // lock_ttl = 5.
    assert_eq!(one(PrewriteRequest { lock_ttl: 3, ..d() }), [0x28, 3]);
    // pessimistic_actions = 7, packed.
    assert_eq!(
        one(PrewriteRequest {
            pessimistic_actions: vec![
                prewrite_request::PessimisticAction::DoPessimisticCheck as i32,
                prewrite_request::PessimisticAction::SkipPessimisticCheck as i32,
            ],
            ..d()
        }),
        [0x3a, 2, 1, 0]
    );
    // txn_size = 8, for_update_ts = 9, min_commit_ts = 10.
    assert_eq!(one(PrewriteRequest { txn_size: 1, ..d() }), [0x40, 1]);
    assert_eq!(
        one(PrewriteRequest {
            for_update_ts: 1,
            ..d()
        }),
        [0x48, 1]
    );
    assert_eq!(
        one(PrewriteRequest {
            min_commit_ts: 1,
            ..d()
        }),
        [0x50, 1]
    );
    // use_async_commit = 11, secondaries = 12, try_one_pc = 13,
    // max_commit_ts = 14, assertion_level = 15.
    assert_eq!(
        one(PrewriteRequest {
            use_async_commit: true,
            ..d()
        }),
        [0x58, 1]
    );
    assert_eq!(
        one(PrewriteRequest {
            secondaries: vec![b("s")],
            ..d()
        }),
        [0x62, 1, b's']
    );
    assert_eq!(
        one(PrewriteRequest {
            try_one_pc: true,
            ..d()
        }),
        [0x68, 1]
    );
    assert_eq!(
        one(PrewriteRequest {
            max_commit_ts: 1,
            ..d()
        }),
        [0x70, 1]
    );
    assert_eq!(
        one(PrewriteRequest {
            assertion_level: AssertionLevel::Strict as i32,
            ..d()
        }),
        [0x78, 2]
    );
    // for_update_ts_constraints = 16: a two-byte tag (130 = 0x82 0x01).
    assert_eq!(
        one(PrewriteRequest {
            for_update_ts_constraints: vec![prewrite_request::ForUpdateTsConstraint {
                index: 1,
                expected_for_update_ts: 2,
            }],
            ..d()
        }),
        [0x82, 0x01, 4, 0x08, 1, 0x10, 2]
    );
}

#[test]
fn prewrite_accepts_legacy_is_pessimistic_lock() {
    // Older kvproto declares field 7 as `repeated bool is_pessimistic_lock`;
    // [true, false] must decode to [DO_PESSIMISTIC_CHECK, SKIP_PESSIMISTIC_CHECK],
    // packed or not.
    use prewrite_request::PessimisticAction as A;
    let want = vec![A::DoPessimisticCheck as i32, A::SkipPessimisticCheck as i32];
    for wire in [&[0x3a, 2, 1, 0][..], &[0x38, 1, 0x38, 0][..]] {
        let r = PrewriteRequest::decode(wire).unwrap();
        assert_eq!(r.pessimistic_actions, want);
    }
}

#[test]
fn prewrite_response_field_numbers() {
    let r = PrewriteResponse {
        min_commit_ts: 7,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x18, 7]);
    let r = PrewriteResponse {
        one_pc_commit_ts: 7,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x20, 7]);
    // errors = 2: KeyError { abort = 3: "x" }.
    let r = PrewriteResponse {
        errors: vec![KeyError {
            abort: "x".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x12, 3, 0x1a, 1, b'x']);
}

#[test]
fn commit_field_numbers() {
    let d = CommitRequest::default;
    assert_eq!(
        enc(&CommitRequest {
            start_version: 1,
            ..d()
        }),
        [0x10, 1]
    );
    assert_eq!(
        enc(&CommitRequest {
            keys: vec![b("k")],
            ..d()
        }),
        [0x1a, 1, b'k']
    );
    assert_eq!(
        enc(&CommitRequest {
            commit_version: 2,
            ..d()
        }),
        [0x20, 2]
    );
    // commit_role = 6, primary_key = 7, use_async_commit = 8 (5 is reserved).
    assert_eq!(
        enc(&CommitRequest {
            commit_role: CommitRole::Secondary as i32,
            ..d()
        }),
        [0x30, 2]
    );
    assert_eq!(
        enc(&CommitRequest {
            primary_key: b("p"),
            ..d()
        }),
        [0x3a, 1, b'p']
    );
    assert_eq!(
        enc(&CommitRequest {
            use_async_commit: true,
            ..d()
        }),
        [0x40, 1]
    );
    let r = CommitResponse {
        commit_version: 9,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x18, 9]);
}

#[test]
fn get_field_numbers() {
    let r = GetRequest {
        key: b("k"),
        version: 3,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x12, 1, b'k', 0x18, 3]);
    let r = GetRequest {
        need_commit_ts: true,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x20, 1]);
    let r = GetResponse {
        value: b("v"),
        not_found: true,
        commit_ts: 4,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x1a, 1, b'v', 0x20, 1, 0x38, 4]);
}

#[test]
fn key_error_and_lock_info_field_numbers() {
    // KeyError.locked = 1: LockInfo { primary_lock = 1, lock_version = 2,
    // key = 3, lock_ttl = 4, txn_size = 5, lock_type = 6 }.
    let e = KeyError {
        locked: Some(LockInfo {
            primary_lock: b("p"),
            lock_version: 10,
            key: b("k"),
            lock_ttl: 56,
            txn_size: 1,
            lock_type: Op::PessimisticLock as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        enc(&e),
        [0x0a, 14, 0x0a, 1, b'p', 0x10, 10, 0x1a, 1, b'k', 0x20, 56, 0x28, 1, 0x30, 5]
    );
    // lock_for_update_ts = 7, use_async_commit = 8, min_commit_ts = 9,
    // secondaries = 10.
    let l = LockInfo {
        lock_for_update_ts: 1,
        use_async_commit: true,
        min_commit_ts: 2,
        secondaries: vec![b("s")],
        ..Default::default()
    };
    assert_eq!(enc(&l), [0x38, 1, 0x40, 1, 0x48, 2, 0x52, 1, b's']);
    // retryable = 2, conflict = 4 (WriteConflict.reason = 6).
    let e = KeyError {
        retryable: "r".into(),
        conflict: Some(WriteConflict {
            reason: 6,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(enc(&e), [0x12, 1, b'r', 0x22, 2, 0x30, 6]);
}

#[test]
fn check_txn_status_field_numbers() {
    let r = CheckTxnStatusRequest {
        primary_key: b("p"),
        lock_ts: 1,
        caller_start_ts: 2,
        current_ts: 3,
        rollback_if_not_exist: true,
        verify_is_primary: true,
        ..Default::default()
    };
    assert_eq!(
        enc(&r),
        [0x12, 1, b'p', 0x18, 1, 0x20, 2, 0x28, 3, 0x30, 1, 0x48, 1]
    );
    // lock_ttl = 3, commit_version = 4, action = 5.
    let r = CheckTxnStatusResponse {
        lock_ttl: 1,
        commit_version: 2,
        action: Action::MinCommitTsPushed as i32,
        ..Default::default()
    };
    assert_eq!(enc(&r), [0x18, 1, 0x20, 2, 0x28, 3]);
    assert_eq!(Action::LockNotExistDoNothing as i32, 5);
}

#[test]
fn enum_values() {
    assert_eq!(Op::Put as i32, 0);
    assert_eq!(Op::Del as i32, 1);
    assert_eq!(Op::Lock as i32, 2);
    assert_eq!(Op::Rollback as i32, 3);
    assert_eq!(Op::Insert as i32, 4);
    assert_eq!(Op::PessimisticLock as i32, 5);
    assert_eq!(Op::CheckNotExists as i32, 6);
    assert_eq!(Assertion::NotExist as i32, 2);
    assert_eq!(
        prewrite_request::PessimisticAction::DoConstraintCheck as i32,
        2
    );
}

#[test]
fn roundtrips() {
    roundtrip(&PrewriteRequest {
        mutations: vec![
            Mutation {
                op: Op::Put as i32,
                key: b("a"),
                value: b("1"),
                assertion: Assertion::NotExist as i32,
            },
            Mutation {
                op: Op::Del as i32,
                key: b("b"),
                ..Default::default()
            },
        ],
        primary_lock: b("a"),
        start_version: 100,
        lock_ttl: 3000,
        txn_size: 2,
        use_async_commit: true,
        secondaries: vec![b("b")],
        max_commit_ts: 200,
        ..Default::default()
    });
    roundtrip(&PessimisticLockRequest {
        mutations: vec![Mutation {
            op: Op::PessimisticLock as i32,
            key: b("a"),
            ..Default::default()
        }],
        primary_lock: b("a"),
        start_version: 100,
        for_update_ts: 110,
        wait_timeout: -1,
        return_values: true,
        ..Default::default()
    });
    roundtrip(&PessimisticLockResponse {
        values: vec![b("v"), Bytes::new()],
        not_founds: vec![false, true],
        ..Default::default()
    });
    roundtrip(&ScanRequest {
        start_key: b("z"),
        end_key: b("a"),
        limit: 10,
        version: 5,
        reverse: true,
        key_only: true,
        ..Default::default()
    });
    roundtrip(&KvPair {
        error: Some(KeyError {
            locked: Some(LockInfo {
                key: b("k"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        key: b("k"),
        ..Default::default()
    });
    roundtrip(&ResolveLockRequest {
        txn_infos: vec![
            TxnInfo {
                txn: 1,
                status: 0,
                ..Default::default()
            },
            TxnInfo {
                txn: 2,
                status: 3,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    roundtrip(&ScanLockRequest {
        max_version: 9,
        start_key: b("a"),
        limit: 100,
        end_key: b("b"),
        ..Default::default()
    });
    roundtrip(&TxnHeartBeatRequest {
        primary_lock: b("p"),
        start_version: 1,
        advise_lock_ttl: 20_000,
        ..Default::default()
    });
}

/// The gRPC paths clients call; `KVPessimisticRollback` keeps kvproto's
/// upper-case `KV`.
#[test]
fn tikv_method_paths() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/tikvpb.rs"));
    for m in [
        "KvGet",
        "KvScan",
        "KvPrewrite",
        "KvPessimisticLock",
        "KVPessimisticRollback",
        "KvTxnHeartBeat",
        "KvCheckTxnStatus",
        "KvCheckSecondaryLocks",
        "KvCommit",
        "KvCleanup",
        "KvBatchGet",
        "KvBatchRollback",
        "KvScanLock",
        "KvResolveLock",
        "KvDeleteRange",
        "UnsafeDestroyRange",
    ] {
        let path = format!("\"/tikvpb.Tikv/{m}\"");
        assert!(generated.contains(&path), "missing {path}");
    }
}

/// Compiles only if the server trait has the transactional methods.
#[allow(dead_code)]
fn server_trait_has_methods<T: proto::tikvpb::tikv_server::Tikv>() {
    let _ = T::kv_get;
    let _ = T::kv_prewrite;
    let _ = T::kv_pessimistic_rollback;
    let _ = T::kv_check_txn_status;
    let _ = T::unsafe_destroy_range;
}
