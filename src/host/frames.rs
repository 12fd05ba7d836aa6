//! The frame transport: TCP connections between sync actors, written once for both worlds
//! (`tokio::net` is madsim's network in the simulator).
//!
//! * **Serving.** Frame connections arrive on a channel (the production listener tells them from
//!   HTTP by their first bytes, `cluster::frame::MAGIC`; the simulator accepts them directly).
//!   Each is read frame by frame: the length is checked before the body is allocated, the tag
//!   before the body is decoded; a connection that sends anything wrong is dropped and the reason
//!   counted. Each request is handed to the sync actor and its answer written back.
//! * **Requesting.** Actors' [`PeerRequest`]s (the sync and conflict actors') go through a
//!   dispatcher to one task per peer (a bounded queue each), which keeps one connection to the
//!   peer, opens it again after any failure, and reports every request's answer, or why there is
//!   none, as a [`PeerAnswer`] to the request's `answer_to`. A peer task with nothing to do for
//!   [`PEER_IDLE_EXIT`] ends (a member that left or died for good costs nothing after that); the
//!   next request to that peer starts another. Every step has a timeout: under a partition a simulated TCP
//!   connection never breaks, it only stalls, and only timeouts make the partition visible.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cluster::envelope::Rejected;
use crate::cluster::frame::{
    self, Direction, FrameKeys, WireRequest, WireResponse, HELLO_BYTES, NONCE_BYTES, TAG_BYTES,
};
use crate::cluster::NetCounters;
use crate::seam::{reply_channel, Addr, Mailbox, SendError};
use crate::sync::{PeerAnswer, PeerRequest, SyncMsg, TransportError};

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request may wait for its answer (sending included).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a served connection may stay silent between requests.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a peer's request task waits for a request before it ends, closing its connection.
pub const PEER_IDLE_EXIT: Duration = Duration::from_secs(120);
// An idle task outlives any kept connection it could reuse.
const _: () = assert!(PEER_IDLE_EXIT.as_secs() > REUSE_IDLE_MAX.as_secs());

/// Requests waiting for one peer, at most.
pub const PEER_QUEUE: usize = 256;
/// Requests waiting for the dispatcher, at most.
pub const DISPATCH_QUEUE: usize = 1024;

/// A byte stream a frame connection runs on.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for T {}

/// An accepted frame connection and its peer's address.
pub type Incoming = (Box<dyn Conn>, SocketAddr);

/// The transport's tasks (the simulator's crashes drop them with their node).
pub struct FrameTasks {
    server: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

impl FrameTasks {
    /// Stops serving and requesting.
    pub fn stop(self) {
        self.server.abort();
        self.dispatcher.abort();
    }
}

/// Starts serving `incoming` connections for `sync` and delivering its requests; returns the
/// address `sync` sends its requests to.
pub fn start(
    keys: FrameKeys,
    incoming: mpsc::Receiver<Incoming>,
    sync: Addr<SyncMsg>,
    rng: ChaCha12Rng,
    counters: Arc<NetCounters>,
) -> (Addr<PeerRequest>, FrameTasks) {
    let server = tokio::spawn(serve(
        incoming,
        keys.clone(),
        sync.clone(),
        Arc::clone(&counters),
    ));
    let (tx, rx) = mpsc::channel(DISPATCH_QUEUE);
    let dispatcher = tokio::spawn(dispatch(rx, keys, rng, counters));
    let requests = Addr::new(Arc::new(Requests(tx)) as Arc<dyn Mailbox<PeerRequest>>);
    (requests, FrameTasks { server, dispatcher })
}

/// The sync actor's way to its peers: a bounded queue to the dispatcher.
struct Requests(mpsc::Sender<PeerRequest>);

impl Mailbox<PeerRequest> for Requests {
    fn deliver(&self, msg: PeerRequest) -> Result<(), SendError> {
        self.0.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Stopped,
        })
    }
}

async fn serve(
    mut incoming: mpsc::Receiver<Incoming>,
    keys: FrameKeys,
    sync: Addr<SyncMsg>,
    counters: Arc<NetCounters>,
) {
    while let Some((conn, from)) = incoming.recv().await {
        let (keys, sync, counters) = (keys.clone(), sync.clone(), Arc::clone(&counters));
        tokio::spawn(async move {
            if let Err(reason) = serve_connection(conn, from, &keys, &sync, &counters).await {
                if counters.frame_drop_for(reason.label()) {
                    tracing::warn!(%from, %reason, "dropped a frame connection");
                }
            }
        });
    }
}

/// Why a connection ended, if badly.
#[derive(Debug)]
enum Ended {
    /// The peer closed it, or was idle too long: not an error.
    Closed,
    /// Something arrived that is refused.
    Refused(Rejected),
}

impl From<Rejected> for Ended {
    fn from(reason: Rejected) -> Self {
        Ended::Refused(reason)
    }
}

/// Serves one connection until it closes; the reason if it sent anything wrong.
async fn serve_connection(
    mut conn: Box<dyn Conn>,
    from: SocketAddr,
    keys: &FrameKeys,
    sync: &Addr<SyncMsg>,
    counters: &NetCounters,
) -> Result<(), Rejected> {
    let mut hello = [0u8; HELLO_BYTES];
    if !read_within(&mut conn, &mut hello, REQUEST_TIMEOUT).await {
        return Err(Rejected::Truncated);
    }
    let nonce = frame::parse_hello(&hello)?;
    let (mut seq_in, mut seq_out) = (0u64, 0u64);
    loop {
        let body = match read_frame(
            &mut conn,
            keys,
            &nonce,
            Direction::Request,
            seq_in,
            // A peer sends its first request as soon as it connects: a connection that sends
            // none holds its place (`host::listener`) for a request's time, not an idle one.
            if seq_in == 0 {
                REQUEST_TIMEOUT
            } else {
                IDLE_TIMEOUT
            },
        )
        .await
        {
            Ok(body) => body,
            Err(Ended::Closed) => return Ok(()),
            Err(Ended::Refused(reason)) => return Err(reason),
        };
        seq_in += 1;
        let request: WireRequest = postcard::from_bytes(&body).map_err(|_| Rejected::Malformed)?;
        let (kind, received) = (request.request.kind(), frame::wire_len(body.len()));
        let (reply, answer) = reply_channel();
        let msg = SyncMsg::Request {
            from,
            request: request.request,
            reply,
        };
        let response = match sync.send(msg) {
            Ok(()) => match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok(response)) => response,
                _ => frame::SyncResponse::Busy,
            },
            Err(_) => frame::SyncResponse::Busy,
        };
        let body = postcard::to_allocvec(&WireResponse {
            id: request.id,
            response,
        })
        .expect("a response encodes");
        let out = keys.seal(&nonce, Direction::Response, seq_out, &body);
        seq_out += 1;
        if !write_within(&mut conn, &out, REQUEST_TIMEOUT).await {
            return Ok(());
        }
        counters.served(kind, received, out.len());
    }
}

/// Reads one frame's body, checked; `Closed` on end of stream or silence beyond `idle`.
async fn read_frame(
    conn: &mut Box<dyn Conn>,
    keys: &FrameKeys,
    nonce: &[u8; NONCE_BYTES],
    dir: Direction,
    seq: u64,
    idle: Duration,
) -> Result<Vec<u8>, Ended> {
    let mut header = [0u8; 4];
    if !read_within(conn, &mut header, idle).await {
        return Err(Ended::Closed);
    }
    let len = frame::body_len(header)?;
    // Grown as bytes arrive, not allocated from the announced length: a sender without the
    // secret cannot make this node hold memory it has not sent.
    let mut body = Vec::new();
    let mut limited = (&mut *conn).take(len as u64);
    let complete = matches!(
        tokio::time::timeout(REQUEST_TIMEOUT, limited.read_to_end(&mut body)).await,
        Ok(Ok(n)) if n == len
    );
    let mut tag = [0u8; TAG_BYTES];
    if !complete || !read_within(conn, &mut tag, REQUEST_TIMEOUT).await {
        return Err(Ended::Refused(Rejected::Truncated));
    }
    keys.check(nonce, dir, seq, &body, &tag)?;
    Ok(body)
}

/// Fills `buf` within `limit`; false on end of stream, an error or the time running out.
async fn read_within(conn: &mut Box<dyn Conn>, buf: &mut [u8], limit: Duration) -> bool {
    matches!(
        tokio::time::timeout(limit, conn.read_exact(buf)).await,
        Ok(Ok(_))
    )
}

/// Writes and flushes `bytes` within `limit` (madsim sends nothing until the flush).
async fn write_within(conn: &mut Box<dyn Conn>, bytes: &[u8], limit: Duration) -> bool {
    let write = async {
        conn.write_all(bytes).await?;
        conn.flush().await
    };
    matches!(tokio::time::timeout(limit, write).await, Ok(Ok(())))
}

async fn dispatch(
    mut requests: mpsc::Receiver<PeerRequest>,
    keys: FrameKeys,
    mut rng: ChaCha12Rng,
    counters: Arc<NetCounters>,
) {
    let mut peers: BTreeMap<SocketAddr, mpsc::Sender<PeerRequest>> = BTreeMap::new();
    while let Some(request) = requests.recv().await {
        let to = request.to;
        let mut start_peer = || {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let peer_rng = ChaCha12Rng::from_rng(&mut rng);
            tokio::spawn(peer(to, rx, keys.clone(), peer_rng, Arc::clone(&counters)));
            tx
        };
        if peers.get(&to).is_none_or(mpsc::Sender::is_closed) {
            // Forget every peer whose task ended idle, and start this one's.
            peers.retain(|_, queue| !queue.is_closed());
            peers.insert(to, start_peer());
        }
        let queue = peers.get_mut(&to).expect("inserted above");
        let refused = match queue.try_send(request) {
            Ok(()) => None,
            // Its task ended idle between the check and the send: a new one takes it.
            Err(mpsc::error::TrySendError::Closed(request)) => {
                *queue = start_peer();
                queue.try_send(request).err().map(|e| match e {
                    mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
                })
            }
            Err(mpsc::error::TrySendError::Full(request)) => Some(request),
        };
        if let Some(request) = refused {
            let _ = request.answer_to.send(PeerAnswer {
                id: request.id,
                result: Err(TransportError::QueueFull),
            });
        }
    }
}

/// A connection to one peer, as the requesting side.
struct Connection {
    conn: Box<dyn Conn>,
    nonce: [u8; NONCE_BYTES],
    seq_out: u64,
    seq_in: u64,
    last_used: tokio::time::Instant,
}

/// A kept connection idle longer than this is replaced before use: well under the serving
/// side's `IDLE_TIMEOUT`, after which it closes its end.
pub const REUSE_IDLE_MAX: Duration = Duration::from_secs(30);

/// Delivers requests to `to`, one at a time, over one connection kept open between them. Pushes
/// queued one behind another go as one frame ([`merge_pushes`]).
async fn peer(
    to: SocketAddr,
    mut requests: mpsc::Receiver<PeerRequest>,
    keys: FrameKeys,
    mut rng: ChaCha12Rng,
    counters: Arc<NetCounters>,
) {
    counters.peer_links.inc();
    let mut connection: Option<Connection> = None;
    // A request taken from the queue while merging pushes, to deliver next.
    let mut held: Option<PeerRequest> = None;
    loop {
        let request = match held.take() {
            Some(request) => request,
            None => match tokio::time::timeout(PEER_IDLE_EXIT, requests.recv()).await {
                Ok(Some(request)) => request,
                Ok(None) => break,
                Err(_idle) => {
                    // No new request gets in now (the dispatcher starts another task for it);
                    // those already queued are still delivered, below.
                    requests.close();
                    match requests.try_recv() {
                        Ok(request) => request,
                        Err(_) => break,
                    }
                }
            },
        };
        let (request, merged) = merge_pushes(request, &mut requests, &mut held);
        if connection
            .as_ref()
            .is_some_and(|c| c.last_used.elapsed() >= REUSE_IDLE_MAX)
        {
            connection = None;
        }
        let reused = connection.is_some();
        let mut result = exchange(&mut connection, to, &request, &keys, &mut rng).await;
        if reused && result.is_err() {
            // The peer may have closed a kept connection (it restarted): once more, afresh.
            connection = None;
            result = exchange(&mut connection, to, &request, &keys, &mut rng).await;
        }
        let result = result.map(|(response, sent, received)| {
            counters.exchanged(request.request.kind(), sent, received);
            response
        });
        if let Err(TransportError::Refused(reason)) = &result {
            if counters.frame_drop_for(reason) {
                tracing::warn!(%to, reason, "a peer's answer was refused");
            }
        }
        if result.is_err() {
            connection = None;
        }
        // A full mailbox loses this answer; the requesting actor times the request out.
        for (id, answer_to) in merged {
            let _ = answer_to.send(PeerAnswer {
                id,
                result: result.clone(),
            });
        }
        let _ = request.answer_to.send(PeerAnswer {
            id: request.id,
            result,
        });
    }
    counters.peer_links.dec();
}

/// Most records pushes merged into one frame carry (a push larger on its own goes alone): well
/// under what one group commit takes and what a peer's storage mailbox holds, which a frame's
/// records enter one by one (a push that does not fit is answered `Busy`).
pub const MERGED_RECORDS_MAX: usize = 256;
const _: () = assert!(MERGED_RECORDS_MAX * 4 <= crate::storage::BATCH_WRITES_MAX);
// A merged push fits a frame: its keys and values, each record's overhead, the enum tags.
const _: () = assert!(
    frame::PUSH_BYTES_MAX + MERGED_RECORDS_MAX * crate::storage::RECORD_OVERHEAD_BYTES_MAX + 64
        <= frame::BODY_BYTES_MAX
);

/// Keys and values of a push's records: what `PUSH_BYTES_MAX` bounds.
fn push_bytes(records: &[(String, crate::storage::Record)]) -> usize {
    records
        .iter()
        .map(|(path, record)| path.len() + record.data.as_ref().map_or(0, Vec::len))
        .sum()
}

/// Appends to `request`, if it is a push, the pushes queued right behind it, while their records
/// fit one push (`PUSH_BYTES_MAX`) and number at most [`MERGED_RECORDS_MAX`]: under load a push per group commit queues up behind the one in flight, and one frame
/// then carries them all (fewer frames, syscalls and wakeups on both sides; the same records in
/// the same order). The first request that is not merged is left in `held`. Returns the request
/// to send and the ids (with their answer addresses) merged into it, each to get its answer.
fn merge_pushes(
    mut request: PeerRequest,
    queue: &mut mpsc::Receiver<PeerRequest>,
    held: &mut Option<PeerRequest>,
) -> (PeerRequest, Vec<(u64, Addr<PeerAnswer>)>) {
    let mut merged = Vec::new();
    let frame::SyncRequest::Push { records } = &mut request.request else {
        return (request, merged);
    };
    let mut bytes = push_bytes(records);
    while let Ok(next) = queue.try_recv() {
        match next.request {
            frame::SyncRequest::Push { records: more }
                if bytes + push_bytes(&more) <= frame::PUSH_BYTES_MAX
                    && records.len() + more.len() <= MERGED_RECORDS_MAX =>
            {
                bytes += push_bytes(&more);
                records.extend(more);
                merged.push((next.id, next.answer_to));
            }
            request_kind => {
                *held = Some(PeerRequest {
                    request: request_kind,
                    ..next
                });
                break;
            }
        }
    }
    assert!(
        merged.is_empty()
            || (bytes <= frame::PUSH_BYTES_MAX && records.len() <= MERGED_RECORDS_MAX),
        "a merged push within its bounds"
    );
    (request, merged)
}

/// Sends one request and reads its answer, connecting first if needed; with the answer, the
/// bytes of the request's frame and of the answer's.
async fn exchange(
    connection: &mut Option<Connection>,
    to: SocketAddr,
    request: &PeerRequest,
    keys: &FrameKeys,
    rng: &mut ChaCha12Rng,
) -> Result<(frame::SyncResponse, usize, usize), TransportError> {
    if connection.is_none() {
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(TransportError::Connection(e.to_string())),
            Err(_) => return Err(TransportError::Timeout),
        };
        // Frames go out whole at once (no Nagle delay); a no-op under madsim.
        let _ = conn.set_nodelay(true);
        let mut conn: Box<dyn Conn> = Box::new(conn);
        let mut nonce = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut nonce);
        if !write_within(&mut conn, &frame::hello(&nonce), REQUEST_TIMEOUT).await {
            return Err(TransportError::Timeout);
        }
        *connection = Some(Connection {
            conn,
            nonce,
            seq_out: 0,
            seq_in: 0,
            last_used: tokio::time::Instant::now(),
        });
    }
    let c = connection.as_mut().expect("connected above");
    c.last_used = tokio::time::Instant::now();
    let body = postcard::to_allocvec(&WireRequest {
        id: request.id,
        request: request.request.clone(),
    })
    .expect("a request encodes");
    let out = keys.seal(&c.nonce, Direction::Request, c.seq_out, &body);
    c.seq_out += 1;
    if !write_within(&mut c.conn, &out, REQUEST_TIMEOUT).await {
        return Err(TransportError::Timeout);
    }
    let body = match read_frame(
        &mut c.conn,
        keys,
        &c.nonce,
        Direction::Response,
        c.seq_in,
        REQUEST_TIMEOUT,
    )
    .await
    {
        Ok(body) => body,
        Err(Ended::Closed) => return Err(TransportError::Timeout),
        Err(Ended::Refused(reason)) => return Err(TransportError::Refused(reason.label())),
    };
    c.seq_in += 1;
    let received = frame::wire_len(body.len());
    let response: WireResponse = postcard::from_bytes(&body)
        .map_err(|_| TransportError::Refused(Rejected::Malformed.label()))?;
    if response.id != request.id {
        return Err(TransportError::Refused("wrong_correlation_id"));
    }
    Ok((response.response, out.len(), received))
}
