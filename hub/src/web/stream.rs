//! Answers streamed from SQLite (issue 21): the rows of an export are read on a blocking
//! thread and sent in chunks of about 32 KiB through a channel of 4 chunks to the response
//! body, so that an export of a year costs a few hundred KiB of memory, not the whole file.
//! A client that stops reading holds the reader for the stall timeout at most (the
//! connection is then closed, the channel with it, and the reader stops). An error in the
//! middle of a stream aborts the connection: the client sees a truncated download, never a
//! complete-looking one.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::db::sql::Connection;
use axum::body::Body;
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{App, WebError, WebResult};
use crate::enrolment::Enrolment;

const CHUNK: usize = 32 << 10;

/// Where a stream's producer writes.
pub struct Sink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

/// The client went away: stop producing.
const GONE: &str = "client gone";

impl Sink {
    pub fn write(&mut self, bytes: &[u8]) -> WebResult<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> WebResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| WebError::Internal(GONE.into()))
    }
}

/// The receiving end, as a response body.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| c.map(Frame::data)))
    }
}

/// A body that `produce` writes on a blocking thread with a database connection, holding
/// `permit` (a heavy query's place) until it is done.
pub fn body<F>(app: &App, permit: OwnedSemaphorePermit, produce: F) -> Body
where
    F: FnOnce(&Connection, &Enrolment, &mut Sink) -> WebResult<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut sink = Sink {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = app.db_here(|c, e| {
            produce(c, e, &mut sink)?;
            sink.flush()
        });
        match r {
            Ok(()) => {}
            Err(WebError::Internal(m)) if m == GONE => {}
            Err(e) => {
                tracing::error!("hub web: a streamed answer failed midway: {e:?}");
                let _ = tx.blocking_send(Err(io::Error::other("the export failed midway")));
            }
        }
    });
    Body::new(ChannelBody { rx })
}
