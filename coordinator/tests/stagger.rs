//! A task for thousands of tills is announced store by store: with a clock
//! moved by hand, no till's revision moves before its store's turn, a till
//! whose revision moved always finds the task in its list (never a new
//! revision without it), and every till holds it once the spread has passed.
//! Download tasks grant no install permits and bump nothing else.

mod common;

use std::collections::HashMap;

use serde_json::json;
use tillswarm_coordinator::auth::Caller;
use tillswarm_coordinator::tasks::{NewTask, STAGGER_MIN_TARGETS, stagger};
use tillswarm_coordinator::{Config, Coordinator};
use tillswarm_protocol::DeviceId;

use common::fleet::{Fixture, fixture_with, heartbeat, small_package, upload};

const STORES: u32 = 100;
const PER_STORE: u32 = 20;

fn guid(s: u32, n: u32) -> DeviceId {
    format!("5a900000-0000-4000-8000-{s:04x}{n:08x}")
        .parse()
        .expect("guid")
}

async fn big_chain(c: &Coordinator) -> Vec<DeviceId> {
    let mut entries = Vec::new();
    let mut all = Vec::new();
    for s in 0..STORES {
        for n in 1..=PER_STORE {
            all.push(guid(s, n));
            entries.push(json!({"guid": guid(s, n).to_string(), "till_name": format!("Till {n}"),
                "till_number": n, "store_id": format!("s-{s:03}"), "store_name": format!("Store {s}"),
                "store_address": "", "till_type": "standard", "time_zone": "Europe/Moscow"}));
        }
    }
    c.import_registry(
        serde_json::to_vec(&entries).expect("json"),
        true,
        &Caller::system("test"),
    )
    .await
    .expect("import");
    all
}

#[tokio::test]
async fn a_large_task_reaches_every_store_in_turn_and_never_half() {
    let f: Fixture = fixture_with(Config {
        poll_interval_ms: 10_000,
        ..Config::default()
    })
    .await;
    let c = &f.coordinator;
    let tills = big_chain(c).await;
    assert!(tills.len() as i64 >= STAGGER_MIN_TARGETS);
    let mut revision: HashMap<DeviceId, u64> = HashMap::new();
    for d in &tills {
        revision.insert(*d, heartbeat(c, *d, "1.0", None).await.revision);
    }
    let pkg = upload(c, "pos", "2.0", small_package("2.0")).await;
    let input: NewTask =
        serde_json::from_value(json!({"kind": "download", "package_id": pkg, "group_id": 1}))
            .expect("task");
    let created = c
        .create_task(input, &Caller::system("test"))
        .await
        .expect("task");
    assert!(
        created.details_omitted,
        "a large task answers with its summary"
    );
    let task = created.summary.id.0;
    let spread = stagger::spread_ms(10_000);
    let mut holding = 0;
    // Walk through the spread in steps of two seconds, polling every till.
    for step in 0..=(spread / 2000 + 1) {
        c.tick().await.expect("tick");
        for d in &tills {
            let known = revision[d];
            let heard = heartbeat(c, *d, "1.0", Some(known)).await;
            if heard.revision != known {
                let list = heard
                    .assignments
                    .expect("a new revision carries instructions");
                assert!(
                    list.iter().any(|a| a.task_id.0 == task),
                    "step {step}: {d} got revision {} without the task",
                    heard.revision
                );
                assert!(
                    list.iter().all(|a| !a.hold_install),
                    "a download holds nothing"
                );
                holding += 1;
                revision.insert(*d, heard.revision);
            }
        }
        if step == 0 {
            assert!(
                holding < tills.len(),
                "all {holding} tills learned at once: the announcement was not spread"
            );
        }
        f.clock.advance_ms(2000);
    }
    assert_eq!(
        holding,
        tills.len(),
        "every till holds the task after the spread"
    );
}
