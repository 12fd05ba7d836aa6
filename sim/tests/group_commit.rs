//! Group commit in simulation: with the disk's fsync taking simulated time, writes that arrive
//! while a commit runs share the next one, so a burst of concurrent writes costs far fewer syncs
//! than writes, and every write is still answered only once durable.

#![cfg(madsim)]
// Test code may use the OS (clock, threads, processes, files): the seam rule is for src/.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;

use axum::http::StatusCode;
use kvs_sim::{sweep, SimDisk, SimNode};

const WRITERS: usize = 32;
const WRITES_EACH: usize = 8;

#[test]
fn concurrent_writes_share_syncs_and_all_are_durable() {
    sweep::run(11, async {
        let disk = SimDisk::new();
        let node = Arc::new(SimNode::start(1, disk.clone()).await.unwrap());
        let syncs_before = disk.syncs();
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let node = Arc::clone(&node);
                tokio::spawn(async move {
                    for i in 0..WRITES_EACH {
                        let (status, _) = node.put(&format!("w{w}/k{i}"), i.to_string()).await;
                        assert_eq!(status, StatusCode::OK);
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let writes = (WRITERS * WRITES_EACH) as u64;
        let syncs = disk.syncs() - syncs_before;
        assert!(
            syncs * 4 <= writes,
            "{writes} concurrent writes took {syncs} syncs: group commit is not batching"
        );

        // Durable means it survives a power cut.
        node.crash_and_restart().await.unwrap();
        for w in 0..WRITERS {
            for i in 0..WRITES_EACH {
                let (status, body) = node.get(&format!("w{w}/k{i}")).await;
                assert_eq!(
                    (status, &body[..]),
                    (StatusCode::OK, i.to_string().as_bytes())
                );
            }
        }
    });
}
