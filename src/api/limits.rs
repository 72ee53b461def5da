//! Bounds on the status API, so that no client can take what supervision needs: at most
//! [`connection_limit`] connections at a time (a quarter of corral's descriptor limit, the
//! rest kept for listeners, pidfds, logs, `useradd` and GitHub); one more is accepted and
//! closed at once rather than left in the kernel's queue; a connection that sends or takes
//! nothing for [`IDLE`] is closed, and every connection is closed after [`LIFETIME`], so a
//! client that trickles a header (slowloris) holds its descriptor for a bounded time; request
//! bodies are capped at [`BODY_LIMIT`] (a `workflow_job` delivery is a few KiB).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// No byte either way for this long: the connection is closed.
pub const IDLE: Duration = Duration::from_secs(10);
/// No connection lives longer.
pub const LIFETIME: Duration = Duration::from_secs(60);
/// Largest request body.
pub const BODY_LIMIT: usize = 1 << 20;

/// Connections served at a time: a quarter of the soft `RLIMIT_NOFILE`, between 8 and 512.
pub fn connection_limit() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(1024);
    limit_for(soft)
}

fn limit_for(nofile: u64) -> usize {
    (nofile / 4).clamp(8, 512) as usize
}

/// A TCP listener that holds at most `limit` connections open.
pub struct Bounded {
    listener: TcpListener,
    slots: Arc<Semaphore>,
}

impl Bounded {
    /// Bounds `listener` to `limit` connections.
    pub fn new(listener: TcpListener, limit: usize) -> Self {
        Bounded {
            listener,
            slots: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl axum::serve::Listener for Bounded {
    type Io = Limited;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or the like: wait, do not spin.
                    tracing::debug!(cause = %err, "status API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(permit) => return (Limited::new(stream, permit), addr),
                // Full: closed at once, so the descriptor is back before the next accept.
                Err(_) => drop(stream),
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// One accepted connection: its slot is freed when it closes; idle and lifetime bounded.
pub struct Limited {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Pin<Box<Sleep>>,
    end_of_life: Instant,
}

impl Limited {
    fn new(stream: TcpStream, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Limited {
            stream,
            _slot: slot,
            idle: Box::pin(tokio::time::sleep_until(now + IDLE)),
            end_of_life: now + LIFETIME,
        }
    }

    /// After progress: the idle clock starts again (never past the end of life).
    fn progressed(&mut self) {
        let next = (Instant::now() + IDLE).min(self.end_of_life);
        self.idle.as_mut().reset(next);
    }

    /// With nothing to do: an error once the idle time or the lifetime is up.
    fn check_time(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "status API connection idle or too old",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_time(cx).map(Err),
        }
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.stream).poll_write(cx, buf) {
            Poll::Ready(result) => {
                self.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => self.check_time(cx).map(Err),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_of_the_descriptors_within_bounds() {
        assert_eq!(limit_for(1024), 256);
        assert_eq!(limit_for(16), 8);
        assert_eq!(limit_for(1 << 20), 512);
    }

    #[tokio::test]
    async fn excess_connections_are_closed_at_once() {
        use tokio::io::AsyncReadExt as _;
        tokio::time::timeout(Duration::from_secs(60), async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let mut bounded = Bounded::new(listener, 1);
            let first = TcpStream::connect(addr).await.expect("connect");
            let (held, _) = axum::serve::Listener::accept(&mut bounded).await;
            let mut second = TcpStream::connect(addr).await.expect("connect");
            // The accept loop closes the second (no slot) and waits on.
            let accept = tokio::spawn(async move {
                let (io, _) = axum::serve::Listener::accept(&mut bounded).await;
                io
            });
            let mut byte = [0_u8; 1];
            let n = second.read(&mut byte).await.unwrap_or(0);
            assert_eq!(n, 0, "the connection over the limit is closed");
            assert!(!accept.is_finished(), "no slot while the first is held");
            drop(held);
            let third = TcpStream::connect(addr).await.expect("connect");
            accept
                .await
                .expect("the next one is accepted once a slot is free");
            drop((first, third));
        })
        .await
        .expect("within a minute");
    }
}
