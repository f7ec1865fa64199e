//! What trust costs per request, in CPU: the signatures the coordinator makes
//! for every heartbeat (a timestamp) and for every change (instructions), the
//! check of a device login, and what a till spends checking an answer. The
//! baseline in the same run is the device-token check every node request
//! already pays (one blake3 of the token; the database lookup comes on top).
//!
//! `cargo bench -p tillswarm-bench --bench trust` prints the time of each;
//! the coordinator bench (`tillswarm-bench coordinator`) gives the whole
//! heartbeat's cost to compare with.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tillswarm_protocol::DeviceId;
use tillswarm_protocol::api::TillSettings;
use tillswarm_protocol::manifest::SecretKey;
use tillswarm_protocol::trust::{
    self, Domain, Instructions, OnlineKey, Signed, StoreMember, Timestamp, TrustBundle, TrustState,
};

const NOW: u64 = 1_800_000_000;

fn instructions(online: &SecretKey, device: DeviceId, revision: u64) -> Signed {
    let store_members = (0..20u8)
        .map(|n| StoreMember {
            device: DeviceId::from_bytes([n; 16]),
            peer_id: format!("12D3KooW{n:044}"),
            addrs: Vec::new(),
        })
        .collect();
    Signed::sign(
        online,
        Domain::Instructions,
        &Instructions {
            device,
            revision,
            issued_unix: NOW,
            expires_unix: NOW + 86_400,
            assignments: Vec::new(),
            settings: TillSettings::default(),
            store_members,
            chunk_base_url: None,
        },
    )
}

fn costs(c: &mut Criterion) {
    let root = SecretKey::from_seed([1; 32]);
    let online = SecretKey::from_seed([2; 32]);
    let device = DeviceId::from_bytes([7; 16]);
    let certificate = Signed::sign(
        &root,
        Domain::OnlineKey,
        &OnlineKey {
            root_version: 1,
            serial: 1,
            key: online.public(),
            not_after_unix: NOW + 365 * 86_400,
        },
    );
    let timestamp = |revision| {
        Signed::sign(
            &online,
            Domain::Timestamp,
            &Timestamp {
                device,
                revision,
                expires_unix: NOW + 86_400,
            },
        )
    };
    let mut group = c.benchmark_group("trust");
    let token = "tsd_".to_owned() + &"ab".repeat(32);
    group.bench_function("baseline_device_token_hash", |b| {
        b.iter(|| black_box(blake3::hash(black_box(token.as_bytes()))))
    });
    group.bench_function("coordinator_sign_timestamp_per_heartbeat", |b| {
        b.iter(|| black_box(timestamp(black_box(5))))
    });
    group.bench_function("coordinator_sign_instructions_per_change", |b| {
        b.iter(|| black_box(instructions(&online, device, black_box(5))))
    });
    let till_key = SecretKey::from_seed([3; 32]);
    let message = trust::login_message(&device, &"cd".repeat(32), &till_key.public());
    let signature = trust::sign_bytes(&till_key, Domain::DeviceLogin, &message);
    group.bench_function("coordinator_verify_login_per_hour", |b| {
        b.iter(|| {
            black_box(trust::verify_bytes(
                &till_key.public(),
                Domain::DeviceLogin,
                black_box(&message),
                &signature,
            ))
        })
    });
    let poll = TrustBundle {
        rotations: Vec::new(),
        online_key: certificate.clone(),
        timestamp: timestamp(5),
        instructions: None,
    };
    let change = TrustBundle {
        instructions: Some(instructions(&online, device, 5)),
        ..poll.clone()
    };
    let mut accepted = TrustState::pinned(root.public());
    accepted.accept(&change, &device, NOW).expect("genuine");
    group.bench_function("till_check_unchanged_poll", |b| {
        b.iter(|| {
            let mut s = accepted.clone();
            black_box(s.accept(black_box(&poll), &device, NOW).is_ok())
        })
    });
    group.bench_function("till_check_new_instructions", |b| {
        b.iter(|| {
            let mut s = TrustState::pinned(root.public());
            black_box(s.accept(black_box(&change), &device, NOW).is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, costs);
criterion_main!(benches);
