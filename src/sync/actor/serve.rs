//! The serving side: answering peers' requests, and validating the records they push before
//! storage judges them.

use super::*;

impl SyncActor {
    /// Answers a peer's request through `reply`: at once, or, for a barrier, once storage
    /// synced everything handed to it before.
    pub(super) fn serve(
        &mut self,
        wall_ms: u64,
        from: SocketAddr,
        request: SyncRequest,
        reply: Reply<SyncResponse>,
    ) {
        let answer = match request {
            SyncRequest::Push { records } => Ok(self.receive(wall_ms, from, records, Via::Push)),
            SyncRequest::Barrier => {
                // Behind every record this actor handed to storage, in the same mailbox.
                let boot = self.boot;
                let synced = reply.map(move |done: WriteResult<()>| match done {
                    Ok(()) => SyncResponse::Synced { boot },
                    Err(_) => SyncResponse::Busy,
                });
                // A full mailbox drops the reply: the asker hears `Busy`.
                let _ = self.storage.send(StorageMsg::Barrier(synced));
                return;
            }
            SyncRequest::Branches => Ok(repair::answer_branches(&self.reader, self.boot)),
            SyncRequest::Leaves { branches } => Ok(repair::answer_leaves(&self.reader, &branches)),
            SyncRequest::Segments { segments } => repair::answer_segments(&self.reader, &segments),
            SyncRequest::Fetch { keys } => repair::answer_fetch(&self.reader, &keys),
            SyncRequest::Versions { keys } => repair::answer_versions(&self.reader, &keys),
            SyncRequest::Since {
                after_ms,
                after_path,
            } => repair::answer_since(&self.reader, after_ms, &after_path),
        };
        reply.send(answer.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "anti-entropy: answering a peer");
            SyncResponse::Busy
        }))
    }

    /// Hands a peer's records to storage; `Busy` if storage cannot take them now. Pushed records
    /// add to the replication lag histogram: how long after its stamp each arrived.
    pub(super) fn receive(
        &mut self,
        wall_ms: u64,
        from: SocketAddr,
        records: Vec<(String, Record)>,
        via: Via,
    ) -> SyncResponse {
        for (path, record) in records {
            if via == Via::Push {
                let lag_ms = wall_ms.saturating_sub(record.version.timestamp_ms);
                self.counters
                    .replication_lag
                    .observe(lag_ms as f64 / 1000.0);
            }
            if record.version.timestamp_ms > wall_ms.saturating_add(SKEW_MAX_MS) {
                self.counters.skewed_records.inc();
                tracing::warn!(
                    %from,
                    path,
                    timestamp_ms = record.version.timestamp_ms,
                    wall_ms,
                    "dropped a peer's record stamped too far in the future"
                );
                continue;
            }
            if let Err(why) = valid(&path, &record) {
                self.counters.malformed_records.inc();
                tracing::warn!(%from, path, why, "dropped a malformed record from a peer");
                continue;
            }
            // Storage answers with what it did; nobody waits for it (a lost record is repaired
            // by anti-entropy, a duplicate is a no-op).
            let (reply, _) = reply_channel();
            let write = Write::Apply {
                path,
                record,
                reply,
            };
            match self.storage.send(StorageMsg::Write(write)) {
                Ok(()) => {
                    self.counters.received_records.inc();
                }
                Err(_) => return SyncResponse::Busy,
            }
        }
        SyncResponse::Accepted
    }
}

/// Why a peer's record cannot be applied, if it cannot.
pub(super) fn valid(path: &str, record: &Record) -> Result<(), &'static str> {
    KeyPath::parse(path).map_err(|_| "invalid key path")?;
    if record.origin.len() > NODE_ID_BYTES_MAX {
        return Err("origin too long");
    }
    if let Some(data) = &record.data {
        if data.len() > VALUE_BYTES_MAX {
            return Err("value too large");
        }
        let text = std::str::from_utf8(data).map_err(|_| "value is not UTF-8")?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|_| "value is not JSON")?;
    }
    Ok(())
}
