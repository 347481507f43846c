//! A read deadline for downloads: fails a read that makes no progress for a while, however
//! long the whole download takes (a server that stalls mid-body must not hold a fetch).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Fails a read that makes no progress for `idle`, however long the whole download takes.
pub struct IdleTimeout<R> {
    inner: R,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
}

impl<R> IdleTimeout<R> {
    pub fn new(inner: R, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for IdleTimeout<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let next = Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(r)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("download stalled for {:?}", this.idle),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_stalled_download_times_out() {
        let (_writer, reader) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(reader, Duration::from_millis(50));
        let start = std::time::Instant::now();
        let e = r.read_u8().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_slow_but_moving_download_does_not() {
        let (mut w, reader) = tokio::io::duplex(64);
        let mut r = IdleTimeout::new(reader, Duration::from_millis(200));
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for i in 0..6u8 {
                tokio::time::sleep(Duration::from_millis(80)).await;
                w.write_all(&[i]).await.unwrap();
            }
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, [0, 1, 2, 3, 4, 5]);
        writer.await.unwrap();
    }
}
