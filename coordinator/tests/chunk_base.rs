//! The chunk base URL in tills' signed instructions: a change of it in the
//! coordinator's settings reaches every till at its next poll (its
//! instructions move on), and a restart with the same one moves nothing.

mod common;

use std::sync::Arc;

use tillswarm_coordinator::{Config, Coordinator};

use common::fleet::{Fixture, fixture_with, heartbeat, till};

fn with_base(base: Option<&str>) -> Config {
    Config {
        chunk_base_url: base.map(str::to_owned),
        ..Config::default()
    }
}

#[tokio::test]
async fn a_changed_chunk_base_url_reaches_every_till_at_its_next_poll() {
    let Fixture {
        coordinator,
        clock,
        _dir,
    } = fixture_with(with_base(Some("https://cdn.example.com/a/"))).await;
    let d = till(0, 1);
    let first = heartbeat(&coordinator, d, "0.9", None).await;
    assert_eq!(
        first.chunk_base_url,
        Some(Some("https://cdn.example.com/a".into())),
        "the trailing slash is dropped"
    );
    drop(coordinator);

    let reopen = |base: Option<&str>| {
        let config = Config {
            data_dir: _dir.path().to_path_buf(),
            ..with_base(base)
        };
        let clock = clock.clone();
        async move {
            Coordinator::open_with_clock(config, Arc::new(clock))
                .await
                .expect("reopen")
        }
    };
    // The same base after a restart: the till's revision holds.
    let c = reopen(Some("https://cdn.example.com/a")).await;
    let same = heartbeat(&c, d, "0.9", Some(first.revision)).await;
    assert_eq!(same.revision, first.revision);
    assert!(same.chunk_base_url.is_none(), "no new instructions");
    drop(c);

    // Another base: new instructions at the next poll, carrying it.
    let c = reopen(Some("https://cdn.example.com/b")).await;
    let moved = heartbeat(&c, d, "0.9", Some(first.revision)).await;
    assert_ne!(moved.revision, first.revision);
    assert_eq!(
        moved.chunk_base_url,
        Some(Some("https://cdn.example.com/b".into()))
    );
    drop(c);

    // No base any more: tills are told so too.
    let c = reopen(None).await;
    let none = heartbeat(&c, d, "0.9", Some(moved.revision)).await;
    assert_ne!(none.revision, moved.revision);
    assert_eq!(none.chunk_base_url, Some(None));
}
